"""How much more training each unmet target of the shipped weights needs, from the run's own curves.

    python bench/bench_budget.py --run_dir runs/ipt_tiny --results bench/results_tiny.json \
        [--json bench/budget_tiny.json] [--markdown bench/budget_tiny.md]

Why an extrapolation and not a longer run: the recipe has a 2.5 h budget on this CPU, and the
question is how far past it a target lies. For each task's own stage (RUN_DIR/TASK/metrics.jsonl,
written by train.py: the task trained alone from scratch in the default recipe, or fine-tuned from
a pre-training with --pretrain_steps) the held-out validation PSNR is fitted as a + b * log2(step)
over the validations of the schedule's first half, where the cosine lr is still above half its
peak: b is the measured gain per doubling of the task's steps (on Y, or on RGB for an RGB
target). A target short by g dB on its benchmark then needs about g / b more doublings, i.e.
F * 2^(g / b) steps, assuming the benchmark gains what the held-out images gain and b stays
constant. The gain per doubling shrinks as training goes on, so the budget printed is a lower
bound. Time per step is the stage's median logged samples/s (validation time excluded).

The targets are issue 19's (PSNR, IPT protocol, full sets); the achieved values and the bicubic and
CBM3D references come from bench_results.py's --json output.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.train_loop import METRICS_FILE, read_metrics  # noqa: E402
from src.utils import write_text_atomic  # noqa: E402

# (task, benchmark set, metric, kind, value): kind "abs" is a PSNR to reach; "gain" and "cbm3d" are a
# margin over the degraded input (bicubic) or over CBM3D on that metric (both from the results file).
TARGETS: Tuple[Tuple[str, str, str, str, float], ...] = (
    ("sr_x2", "Set5", "y", "abs", 36.0),
    ("sr_x4", "Set5", "y", "abs", 30.0),
    ("sr_x2", "Set14", "y", "gain", 1.0),
    ("sr_x3", "Set14", "y", "gain", 1.0),
    ("sr_x4", "Set14", "y", "gain", 1.0),
    ("denoise_30", "CBSD68", "y", "cbm3d", 0.0),
    ("denoise_30", "CBSD68", "rgb", "cbm3d", 0.0),
    ("denoise_50", "CBSD68", "y", "cbm3d", 0.0),
    ("denoise_50", "CBSD68", "rgb", "cbm3d", 0.0),
    ("derain", "Rain100L", "y", "abs", 31.5),
)


def val_curve(records: Sequence[dict], metric: str) -> List[Tuple[int, float]]:
    """[(step, held-out PSNR)] of a run's validations, on Y or RGB."""
    key = "val_psnr" if metric == "y" else "val_psnr_rgb"
    return sorted((r["step"], r[key]) for r in records if r.get("kind") == "val" and key in r)


def gain_per_doubling(curve: Sequence[Tuple[int, float]], last_step: int) -> Optional[float]:
    """Least-squares slope of PSNR against log2(step) over the first half of the schedule (>= 2 points)."""
    pts = [(math.log2(s), p) for s, p in curve if 0 < s <= last_step / 2]
    if len(pts) < 2:
        return None
    mx = statistics.fmean(x for x, _ in pts)
    my = statistics.fmean(y for _, y in pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx else None


def seconds_per_step(records: Sequence[dict], batch: int) -> Optional[float]:
    """Median training time per step of a run (batch / samples per second of its logged steps)."""
    rates = [r["samples_per_s"] for r in records if r.get("kind") == "train" and r.get("samples_per_s")]
    return batch / statistics.median(rates) if rates else None


def result_row(results: dict, task: str, bench_set: str) -> Optional[dict]:
    return next((r for r in results["rows"] if r["task"] == task and r["set"] == bench_set), None)


def target_value(row: dict, metric: str, kind: str, value: float) -> Tuple[float, str]:
    """The PSNR to reach and how it was defined."""
    if kind == "abs":
        return value, f"{value:.2f} dB"
    if kind == "gain":
        base = row["evals"][f"baseline_{metric}"][f"psnr_{metric}"]
        return base + value, f"bicubic + {value:.1f} dB"
    ref = (row.get("cbm3d") or {}).get(f"psnr_{metric}")
    if ref is None:
        raise SystemExit(f"error: no CBM3D value for {row['task']} in the results file (run bench_cbm3d.py)")
    return ref + value, "CBM3D" if value == 0 else f"CBM3D + {value:.1f} dB"


def estimate(run_dir: Path, results: dict, batch: int = 8) -> List[dict]:
    out = []
    for task, bench_set, metric, kind, value in TARGETS:
        row = result_row(results, task, bench_set)
        if row is None or not (run_dir / task / METRICS_FILE).is_file():
            continue  # not in the table, or that stage has not run (yet)
        target, what = target_value(row, metric, kind, value)
        achieved = row["evals"][f"ours_{metric}"][f"psnr_{metric}"]
        records = read_metrics(run_dir / task)
        steps = max((r["step"] for r in records if r.get("kind") == "train"), default=0)
        slope = gain_per_doubling(val_curve(records, metric), steps)
        sec = seconds_per_step(records, batch)
        short = target - achieved
        entry = {"task": task, "set": bench_set, "metric": metric, "target": target, "target_is": what,
                 "achieved": achieved, "short_db": short, "met": short <= 0, "task_steps": steps,
                 "gain_per_doubling_db": slope, "seconds_per_step": sec}
        if short > 0 and slope and slope > 0 and steps:
            doublings = short / slope
            entry["doublings"] = doublings
            entry["steps_needed"] = steps * 2 ** doublings
            if sec:
                entry["hours_needed"] = entry["steps_needed"] * sec / 3600
        out.append(entry)
    return out


def markdown(entries: Sequence[dict]) -> str:
    lines = ["| task | set | metric | target | ours | short (dB) | gain per doubling (dB) | task steps needed | hours here (at least) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        if e["met"]:
            need = ("met", "")
        elif "steps_needed" in e:
            need = (f"{e['steps_needed']:,.0f} (x{2 ** e['doublings']:,.0f})",
                    f"{e['hours_needed']:,.1f}" if "hours_needed" in e else "")
        else:
            need = ("no gain measured", "")
        slope = f"{e['gain_per_doubling_db']:.3f}" if e["gain_per_doubling_db"] is not None else ""
        lines.append(f"| {e['task']} | {e['set']} | {e['metric'].upper()} | {e['target']:.2f} ({e['target_is']}) | "
                     f"{e['achieved']:.2f} | {max(e['short_db'], 0):.2f} | {slope} | {need[0]} | {need[1]} |")
    lines.append("")
    lines.append("Hours: at the seconds per step logged by the run itself, so on the CPU that ran it "
                 "(name that CPU next to them; scripts/train_tiny.sh records it in TRAINING.txt); "
                 "lower bounds, see bench/bench_budget.py.")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run_dir", required=True, help="the recipe's run folder (scripts/train_tiny.sh RUN)")
    parser.add_argument("--results", required=True, help="bench_results.py --json output of its weights")
    parser.add_argument("--batch_size", type=int, default=8, help="the run's batch (the recipe's: 8)")
    parser.add_argument("--json", default=None, help="write the estimates here")
    parser.add_argument("--markdown", default=None, help="write the table here")
    args = parser.parse_args(argv)
    run_dir, results_path = Path(args.run_dir), Path(args.results)
    for path in (run_dir, results_path):
        if not path.exists():
            raise SystemExit(f"error: {path} does not exist")
    results = json.loads(results_path.read_text())
    entries = estimate(run_dir, results, args.batch_size)
    table = markdown(entries)
    sys.stdout.write(table)
    if args.json:
        write_text_atomic(Path(args.json), json.dumps({"run_dir": args.run_dir, "results": args.results,
                                                       "estimates": entries}, indent=1) + "\n")
    if args.markdown:
        write_text_atomic(Path(args.markdown), table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
