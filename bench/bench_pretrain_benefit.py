"""Does multi-task pre-training help? Fine-tune from the pre-trained checkpoint vs from scratch.

    python bench/bench_pretrain_benefit.py --pretrained pretrained/ipt_tiny_pretrain.ckpt \\
        [--steps 300] [--tasks sr_x2 denoise_30] [--limit 10] [--lr 1e-4] [--out_dir DIR] [--json FILE]

The controlled experiment: for each task, ipt_tiny is fine-tuned for the same number of steps
(a) from the multi-task pre-trained checkpoint (shared body + that task's head, tail and query) and
(b) from random initialisation. Everything else is equal: same seed (so the same random init of
what is not loaded and the same data order: train.py keys every sample by seed, step and index),
same batch, same constant lr. Both are then scored by eval.py (Y, IPT protocol) on the first
`--limit` images of the task's benchmark (Set5 for SR, CBSD68 for denoising, Rain100L for
deraining), next to the degraded input (`--baseline`). train.py and eval.py run as subprocesses.

Runs go to `--out_dir` (default: a temporary folder, removed at the end). A given `--out_dir` is
reused: a run that reached its steps is not trained again, an interrupted one resumes; the settings
are recorded there and a different setting is refused unless --overwrite.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_results import DATA, Status, rel, run_eval, subset_folder  # noqa: E402
from src.tasks import TASKS, get_task  # noqa: E402
from src.train_loop import METRICS_FILE, read_metrics  # noqa: E402
from src.weights import checkpoint_name  # noqa: E402

LOG = logging.getLogger("bench_pretrain_benefit")
SETS = {"sr": ("Set5", "CSet5"), "denoise": ("CBSD68", "CBSD68"), "derain": ("Rain100L", "Rain100L")}


def train(label: str, cmd: List[str], out_dir: Path, steps: int, status: Status) -> Dict:
    """Run train.py (resuming whatever out_dir holds) unless it already reached `steps`."""
    ckpt = out_dir / checkpoint_name(steps)
    start = time.perf_counter()
    if ckpt.is_file():
        status.done(f"{label} already trained ({rel(ckpt)})")
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "stdout.log", "a") as log:
            log.write("$ " + " ".join(cmd) + "\n")
            proc = subprocess.Popen(cmd + ["--resume", "true"], cwd=ROOT, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, bufsize=1)
            assert proc.stdout is not None
            seen = 0
            for line in proc.stdout:
                log.write(line)
                if (out_dir / METRICS_FILE).is_file():
                    records = [r for r in read_metrics(out_dir) if r.get("kind") == "train"]
                    if len(records) > seen:
                        seen, last = len(records), records[-1]
                        status.update(f"{label} step {last['step']}/{steps} l1 {last['l1']:.3f}")
            code = proc.wait()
        if code != 0 or not ckpt.is_file():
            tail = [ln for ln in (out_dir / "stdout.log").read_text(errors="replace").splitlines()
                    if "WARNING" not in ln][-3:]
            status.done(f"{label} FAILED (exit {code}): {' | '.join(tail)}")
            return {"error": f"train.py exited with {code}", "log": str(out_dir / "stdout.log")}
        status.done(f"{label} trained {steps} steps in {time.perf_counter() - start:.0f} s")
    last_l1 = None
    if (out_dir / METRICS_FILE).is_file():
        train_records = [r for r in read_metrics(out_dir) if r.get("kind") == "train" and r["step"] <= steps]
        last_l1 = train_records[-1]["l1"] if train_records else None
    return {"ckpt": str(ckpt), "train_seconds": time.perf_counter() - start, "final_l1": last_l1}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", required=True, help="multi-task pre-trained checkpoint (ipt_tiny)")
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning steps of both runs")
    parser.add_argument("--tasks", nargs="+", default=["sr_x2", "denoise_30"], choices=sorted(TASKS))
    parser.add_argument("--limit", type=int, default=10, help="first K benchmark images (0 = all)")
    parser.add_argument("--lr", type=float, default=1e-4, help="constant fine-tuning lr")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--config", default="ipt_tiny", help="model config of the checkpoint")
    parser.add_argument("--metric", default="y", choices=("y", "rgb"))
    parser.add_argument("--out_dir", default="", help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--json", default="", help="write the results here")
    parser.add_argument("--device_target", default="CPU", choices=("CPU", "GPU", "Ascend"))
    parser.add_argument("--overwrite", action="store_true", help="replace --json; reuse --out_dir with other settings")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    if args.json and Path(args.json).exists() and not args.overwrite:
        parser.error(f"{args.json} exists; pass --overwrite to replace it")
    if not Path(args.pretrained).is_file():
        parser.error(f"--pretrained not found: {args.pretrained}")
    if args.steps < 1 or args.limit < 0:
        parser.error("--steps must be >= 1 and --limit >= 0")

    work = Path(tempfile.mkdtemp(prefix="pretrain_benefit_"))
    out_root = Path(args.out_dir) if args.out_dir else work / "runs"
    settings = {k: getattr(args, k) for k in ("pretrained", "steps", "lr", "batch_size", "seed", "config")}
    settings_file = out_root / "settings.json"
    if settings_file.is_file() and json.loads(settings_file.read_text()) != settings:
        if not args.overwrite:
            parser.error(f"{out_root} holds runs made with other settings ({settings_file}): use another "
                         f"--out_dir, or --overwrite to start them over")
        for task in args.tasks:
            shutil.rmtree(out_root / task, ignore_errors=True)
    out_root.mkdir(parents=True, exist_ok=True)
    settings_file.write_text(json.dumps(settings, indent=1))

    status = Status()
    results: List[Dict] = []
    failed = False
    try:
        for task in args.tasks:
            kind = get_task(task).kind
            label, folder = SETS[kind]
            data = (ROOT / DATA / folder).resolve()
            if args.limit:
                sub = work / "subsets" / folder
                data = sub if sub.is_dir() else subset_folder(data, sub, args.limit, kind)
            common = ["--task", task, "--data_path", str(data), "--metric", args.metric,
                      "--device_target", args.device_target]
            base = run_eval(f"{task:<10} baseline   eval", common + ["--baseline"],
                            work / f"{task}_baseline.json", work / f"{task}_baseline.log", status)
            entry = {"task": task, "set": label, "data_path": f"{DATA}/{folder}", "limit": args.limit,
                     "baseline": base, "runs": {}}
            for start in ("pretrained", "random"):
                run_dir = out_root / task / start
                cmd = [sys.executable, "train.py", "--config", args.config, "--train_mode", "finetune",
                       "--task", task, "--steps", str(args.steps), "--batch_size", str(args.batch_size),
                       "--lr_schedule", "constant", "--lr_min", repr(args.lr), "--seed", str(args.seed),
                       "--save_every", str(max(args.steps // 3, 1)), "--keep_last", "1", "--log_every", "25",
                       "--device_target", args.device_target, "--out_dir", str(run_dir)]
                if start == "pretrained":
                    cmd += ["--pretrained", str(Path(args.pretrained).resolve())]
                run = train(f"{task:<10} {start:<10} train", cmd, run_dir, args.steps, status)
                if "error" not in run:
                    run["eval"] = run_eval(f"{task:<10} {start:<10} eval", common + ["--ckpt", run["ckpt"]],
                                           work / f"{task}_{start}.json", work / f"{task}_{start}.log", status)
                    failed |= "error" in run["eval"]
                else:
                    failed = True
                entry["runs"][start] = run
            results.append(entry)
    finally:
        if not failed:
            shutil.rmtree(work, ignore_errors=True)

    metric = "Y" if args.metric == "y" else "RGB"
    print(f"\nFine-tuning ipt_tiny {args.steps} steps (batch {args.batch_size}, lr {args.lr:g} constant, seed "
          f"{args.seed}) from {rel(Path(args.pretrained))} vs random init; PSNR/SSIM on {metric}")
    print("| task | set (images) | start | PSNR | SSIM | final train L1 |")
    print("|---|---|---|---|---|---|")
    for e in results:
        images = e["baseline"].get("images", "?")
        rows = [("input (baseline)", e["baseline"], None)] + \
               [(s, e["runs"][s].get("eval", {}), e["runs"][s].get("final_l1")) for s in ("pretrained", "random")]
        for start, ev, l1 in rows:
            score = f"{ev['psnr']:.2f} | {ev['ssim']:.4f}" if "psnr" in ev else "failed | -"
            print(f"| {e['task']} | {e['set']} ({images}) | {start} | {score} | {'-' if l1 is None else f'{l1:.3f}'} |")
        a, b = e["runs"]["pretrained"].get("eval", {}), e["runs"]["random"].get("eval", {})
        if "psnr" in a and "psnr" in b:
            e["gain_psnr"], e["gain_ssim"] = a["psnr"] - b["psnr"], a["ssim"] - b["ssim"]
            print(f"| {e['task']} | | **pretrained - random** | **{e['gain_psnr']:+.2f} dB** | "
                  f"**{e['gain_ssim']:+.4f}** | |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"settings": settings, "metric": args.metric,
                                               "out_dir": args.out_dir or None, "results": results}, indent=1))
        print(f"wrote {args.json}")
    if failed:
        print(f"some runs failed; logs in {work} and {out_root}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
