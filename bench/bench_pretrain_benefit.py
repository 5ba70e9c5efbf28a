"""Does multi-task pre-training help? IPT's claim tested at equal compute, with the seed spread shown.

    python bench/bench_pretrain_benefit.py [--out_dir runs/pretrain_benefit] [--targets sr_x2,denoise_30]
        [--seeds 1,2] [--pretrain_steps 800] [--finetune_steps 300] [--json bench/pretrain_benefit.json]
    python bench/bench_pretrain_benefit.py --table_only --json bench/pretrain_benefit.json   # no training

Arms, for every target task and seed; each gets P + F optimizer steps of the same batch size:

  (a) pretrain        six-task pre-training (L1 + contrastive) for P steps, then fine-tuning for F
  (b) scratch         the target task alone, from random initialisation, for P + F steps
  (c) pretrain_nocon  (a) with contrastive weight 0 in pre-training: the paper's contrastive ablation

A pre-training run serves every target of its seed. Fine-tuning and (b) use L1 only, as the paper's
fine-tuning does. Every run is train.py with the seed, batch, peak lr and a cosine decay over the
run's own steps, an EMA of the weights, and validation on held-out training images
(``src/holdout.py``); the best validated checkpoint is scored by eval.py on the full benchmark of its
task (Set5, all 68 CBSD68 images, Rain100L), on Y and RGB. Seeds differ in the random
initialisation and in every sample drawn. Per arm the table shows the mean over seeds and the spread
(half the range); a difference between two arms smaller than the sum of their spreads is reported as
no difference.

Resumable: every run lives in ``--out_dir/RUN``; a finished one is not trained again, an
interrupted one resumes (``train.py --resume``), and a scored one is not scored again
(``RUN/result.json``). The settings are recorded in ``--out_dir/settings.json``; other settings are
refused. ``--json`` gathers every run's record and the table; ``--table_only`` renders the table
from it again without training or scoring.

At a user's scale the same script takes ``--config`` (e.g. ``default_config.yaml``: IPT-base),
``--train_path`` (any folder of clean images, e.g. ImageNet train; ``--val_path`` then names held-out
images, else the folder is split with src/holdout.py's default list, which exists only in
``../shared/datasets/train``), ``--batch_size``, ``--device_target`` and ``--launcher``: the
command that starts one training, e.g. ``--launcher "bash scripts/run_distribute_train.sh 8"`` for an
8-device node (the config is appended to it, then train.py's arguments).
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_results import DATA, Status, git_revision, rel, run_eval  # noqa: E402
from src.tasks import TASKS, get_task  # noqa: E402
from src.train_loop import METRICS_FILE, read_metrics  # noqa: E402
from src.utils import write_text_atomic  # noqa: E402
from src.weights import best_checkpoint_name, checkpoint_name  # noqa: E402

LOG = logging.getLogger("bench_pretrain_benefit")
SETS = {"sr": ("Set5", "CSet5"), "denoise": ("CBSD68", "CBSD68"), "derain": ("Rain100L", "Rain100L")}
ARMS = ("pretrain", "scratch", "pretrain_nocon")
ARM_LABELS = {"pretrain": "(a) six-task pre-training + fine-tuning",
              "scratch": "(b) target task only, from scratch",
              "pretrain_nocon": "(c) as (a), contrastive weight 0"}
# The settings that make two experiments comparable (a different one is refused in the same out_dir).
SETTING_KEYS = ("config", "seeds", "pretrain_steps", "finetune_steps", "batch_size", "lr_max", "lr_min",
                "contrastive_weight", "ema_decay", "train_path", "val_path", "val_every", "launcher")


@dataclass
class Run:
    """One train.py run of the experiment."""

    name: str
    steps: int
    args: List[str]                 # train.py's arguments, without --config
    task: str = ""                  # the scored task ("" for a pre-training run)
    arm: str = ""
    seed: int = 0
    needs: Optional["Run"] = None   # the pre-training run a fine-tuning starts from
    out_dir: Path = field(default_factory=Path)

    @property
    def final_ckpt(self) -> Path:
        return self.out_dir / checkpoint_name(self.steps)


def plan(args: argparse.Namespace, out_root: Path, train_path: str, val_path: str) -> List[Run]:
    """Every run, pre-training before the fine-tunings that start from it."""
    common = ["--batch_size", str(args.batch_size), "--lr_schedule", "cosine", "--lr_max", repr(args.lr_max),
              "--lr_min", repr(args.lr_min), "--ema_decay", repr(args.ema_decay), "--train_path", train_path,
              "--val_path", val_path, "--log_every", "25", "--keep_last", "1", "--device_target", args.device_target]
    p, f = args.pretrain_steps, args.finetune_steps
    runs: List[Run] = []
    for seed in args.seeds:
        seed_args = ["--seed", str(seed)]
        pre = {}
        for arm, weight in (("pretrain", args.contrastive_weight), ("pretrain_nocon", 0.0)):
            run = Run(f"{arm}_s{seed}", p, ["--train_mode", "pretrain", "--steps", str(p),
                                            "--contrastive_weight", repr(weight), "--save_every", str(p),
                                            "--val_every", str(args.val_every or max(p // 2, 1))]
                      + seed_args + common,
                      seed=seed)
            pre[arm] = run
            runs.append(run)
        for task in args.targets:
            every = str(args.val_every or max(f // 3, 1))
            for arm in ("pretrain", "pretrain_nocon"):
                runs.append(Run(f"{task}_{arm}_s{seed}", f,
                                ["--train_mode", "finetune", "--task", task, "--steps", str(f),
                                 "--contrastive_weight", "0", "--save_every", every, "--val_every", every]
                                + seed_args + common, task=task, arm=arm, seed=seed, needs=pre[arm]))
            every = str(args.val_every or max((p + f) // 6, 1))
            runs.append(Run(f"{task}_scratch_s{seed}", p + f,  # fine-tuning mode without --pretrained
                            ["--train_mode", "finetune", "--task", task, "--steps", str(p + f),
                             "--contrastive_weight", "0", "--save_every", every, "--val_every", every]
                            + seed_args + common, task=task, arm="scratch", seed=seed))
    for run in runs:
        run.out_dir = out_root / run.name
    return runs


def command(run: Run, args: argparse.Namespace) -> List[str]:
    """The process that trains ``run``: train.py, or the user's launcher (which takes the config first)."""
    extra = ["--out_dir", str(run.out_dir), "--resume", "true"]
    if run.needs is not None:
        extra += ["--pretrained", str(run.needs.final_ckpt)]
    if args.launcher:
        return shlex.split(args.launcher) + [args.config] + run.args + extra
    return [sys.executable, "train.py", "--config", args.config] + run.args + extra


def train(run: Run, args: argparse.Namespace, status: Status) -> Optional[str]:
    """Train ``run`` to its steps (resuming what its folder holds); None, or the reason it failed."""
    if run.final_ckpt.is_file():
        status.done(f"{run.name}: trained ({rel(run.final_ckpt)})")
        return None
    cmd = command(run, args)
    run.out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(run.out_dir / "stdout.log", "a") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if " step " in line and "/" in line:
                status.update(f"{run.name}: {line.strip()[9:90]}")
        code = proc.wait()
    if code != 0 or not run.final_ckpt.is_file():
        tail = [ln for ln in (run.out_dir / "stdout.log").read_text(errors="replace").splitlines()
                if "WARNING" not in ln][-2:]
        status.done(f"{run.name}: FAILED (exit {code}): {' | '.join(tail)}")
        return f"train.py exited with {code}; log {rel(run.out_dir / 'stdout.log')}"
    status.done(f"{run.name}: trained {run.steps} steps in {time.perf_counter() - start:.0f} s")
    return None


def val_curve(run: Run) -> List[List[float]]:
    """[[step, held-out val PSNR], ...] of the run's scored task, from its metrics.jsonl."""
    if not (run.out_dir / METRICS_FILE).is_file():
        return []
    return [[r["step"], r["val_psnr"]] for r in read_metrics(run.out_dir)
            if r.get("kind") == "val" and r.get("task") == run.task]


def eval_full_set(label: str, task: str, extra: List[str], work: Path, args: argparse.Namespace,
                  status: Status) -> Dict:
    """eval.py on the task's full benchmark (``extra``: --ckpt FILE or --baseline): Y and RGB scores."""
    name, folder = SETS[get_task(task).kind]
    result = run_eval(label, ["--task", task, "--data_path", str((ROOT / DATA / folder).resolve()), "--metric", "y",
                              "--device_target", args.device_target, *extra],
                      work.with_suffix(".json"), work.with_suffix(".log"), status)
    if "error" in result:
        return {"error": result["error"]}
    return {"task": task, "set": name, "images": result["images"], "psnr_y": result["psnr"], "ssim_y": result["ssim"],
            "psnr_rgb": result["psnr_rgb"], "ssim_rgb": result["ssim_rgb"]}


def score(run: Run, args: argparse.Namespace, status: Status) -> Dict:
    """eval.py on the full benchmark with the run's best validated checkpoint (kept in RUN/result.json)."""
    saved = run.out_dir / "result.json"
    ckpt = run.out_dir / best_checkpoint_name(run.task)
    if not ckpt.is_file():  # never validated: the last checkpoint
        ckpt = run.final_ckpt
    if saved.is_file():
        record = json.loads(saved.read_text())
        if record.get("ckpt_mtime") == ckpt.stat().st_mtime_ns:
            status.done(f"{run.name}: scored ({record['set']} Y {record['psnr_y']:.2f} dB)")
            return record
    record = eval_full_set(f"{run.name}: eval", run.task, ["--ckpt", str(ckpt)], run.out_dir / "eval", args, status)
    if "error" in record:
        return {"run": run.name, "error": record["error"]}
    curve = val_curve(run)
    record.update(run=run.name, arm=run.arm, seed=run.seed, steps=run.steps, ckpt=rel(ckpt),
                  ckpt_mtime=ckpt.stat().st_mtime_ns, best_val_psnr=max((v for _, v in curve), default=None),
                  val_curve=curve, pretrained_from=run.needs.name if run.needs else None)
    write_text_atomic(saved, json.dumps(record, indent=1))
    return record


def baseline(task: str, out_root: Path, args: argparse.Namespace, status: Status) -> Dict:
    """The degraded input's score on the task's benchmark (eval.py --baseline), kept in OUT/baseline_TASK.json."""
    saved = out_root / f"baseline_{task}.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    record = eval_full_set(f"{task}: input (baseline)", task, ["--baseline"], out_root / f"baseline_{task}_eval",
                           args, status)
    if "error" not in record:
        write_text_atomic(saved, json.dumps(record, indent=1))
    return record


# ----------------------------------------------------------------------------- table
def summarise(values: Sequence[float]) -> Dict[str, float]:
    """Mean and spread (half the range) over seeds."""
    return {"mean": sum(values) / len(values), "spread": (max(values) - min(values)) / 2, "n": len(values)}


def verdict(a: Dict[str, float], b: Dict[str, float]) -> str:
    """'+x.xx dB' when the means differ by more than the two spreads together, else 'no difference'."""
    diff, noise = a["mean"] - b["mean"], a["spread"] + b["spread"]
    if a["n"] < 2 or b["n"] < 2:
        return f"{diff:+.2f} dB (one seed: spread unknown)"
    if abs(diff) <= noise:
        return f"no difference ({diff:+.2f} dB, within the seed spread of ±{noise:.2f} dB)"
    return f"{diff:+.2f} dB (beyond the seed spread of ±{noise:.2f} dB)"


def table(records: Sequence[Dict], baselines: Dict[str, Dict], settings: Dict) -> str:
    """Markdown: per task, one row per arm (mean ± spread over seeds, Y and RGB), then the two verdicts."""
    lines = [f"Equal compute: every arm {settings['pretrain_steps'] + settings['finetune_steps']} steps of batch "
             f"{settings['batch_size']} ({settings['config']}; P = {settings['pretrain_steps']} pre-training, "
             f"F = {settings['finetune_steps']} fine-tuning steps); seeds {', '.join(map(str, settings['seeds']))}; "
             "PSNR (dB) / SSIM, mean ± spread (half the range over seeds); full benchmark sets.", "",
             "| task | set | arm | seeds | Y PSNR | Y SSIM | RGB PSNR | RGB SSIM | held-out val PSNR |",
             "|---|---|---|---|---|---|---|---|---|"]
    sentences = []
    for task in settings["targets"]:
        rows = [r for r in records if r.get("task") == task and "psnr_y" in r]
        if not rows:
            continue
        base = baselines.get(task, {})
        if "psnr_y" in base:
            lines.append(f"| {task} | {base['set']} | input (baseline) | - | {base['psnr_y']:.2f} | {base['ssim_y']:.4f} "
                         f"| {base['psnr_rgb']:.2f} | {base['ssim_rgb']:.4f} | - |")
        stats = {}
        for arm in ARMS:
            mine = [r for r in rows if r["arm"] == arm]
            if not mine:
                continue
            s = {k: summarise([r[k] for r in mine]) for k in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")}
            vals = [r["best_val_psnr"] for r in mine if r.get("best_val_psnr") is not None]
            stats[arm] = s
            val = f"{summarise(vals)['mean']:.2f} ± {summarise(vals)['spread']:.2f}" if vals else "-"
            lines.append(f"| {task} | {mine[0]['set']} | {ARM_LABELS[arm]} | {len(mine)} | "
                         f"{s['psnr_y']['mean']:.2f} ± {s['psnr_y']['spread']:.2f} | {s['ssim_y']['mean']:.4f} | "
                         f"{s['psnr_rgb']['mean']:.2f} ± {s['psnr_rgb']['spread']:.2f} | {s['ssim_rgb']['mean']:.4f} | {val} |")
        if "pretrain" in stats and "scratch" in stats:
            sentences.append(f"- {task}, pre-training (a) - scratch (b): Y {verdict(stats['pretrain']['psnr_y'], stats['scratch']['psnr_y'])}; "
                             f"RGB {verdict(stats['pretrain']['psnr_rgb'], stats['scratch']['psnr_rgb'])}.")
        if "pretrain" in stats and "pretrain_nocon" in stats:
            sentences.append(f"- {task}, contrastive term (a) - (c): Y {verdict(stats['pretrain']['psnr_y'], stats['pretrain_nocon']['psnr_y'])}; "
                             f"RGB {verdict(stats['pretrain']['psnr_rgb'], stats['pretrain_nocon']['psnr_rgb'])}.")
    return "\n".join(lines + [""] + sentences) + "\n"


# ----------------------------------------------------------------------------- main
def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default="runs/pretrain_benefit", help="the runs (kept: the experiment resumes)")
    parser.add_argument("--targets", default="sr_x2,denoise_30", help="target tasks, comma-separated")
    parser.add_argument("--seeds", default="1,2", help="seeds, comma-separated (>= 2 for a spread)")
    parser.add_argument("--pretrain_steps", type=int, default=800, help="P")
    parser.add_argument("--finetune_steps", type=int, default=300, help="F")
    parser.add_argument("--config", default="ipt_tiny")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--lr_max", type=float, default=1e-3)
    parser.add_argument("--lr_min", type=float, default=1e-5)
    parser.add_argument("--contrastive_weight", type=float, default=0.1, help="of arm (a)'s pre-training")
    parser.add_argument("--ema_decay", type=float, default=0.999)
    parser.add_argument("--train_path", default=f"{DATA}/train", help="clean training images")
    parser.add_argument("--val_path", default="", help="held-out validation images (default: split --train_path)")
    parser.add_argument("--val_every", type=int, default=0, help="0: 3-6 validations per run")
    parser.add_argument("--launcher", default="", help='e.g. "bash scripts/run_distribute_train.sh 8"')
    parser.add_argument("--device_target", default="CPU", choices=("CPU", "GPU", "Ascend"))
    parser.add_argument("--json", default="", help="all records and the table (e.g. bench/pretrain_benefit.json)")
    parser.add_argument("--table_only", action="store_true", help="render the table of --json; no training")
    parser.add_argument("--dry_run", action="store_true", help="print the runs' commands; run nothing")
    parser.add_argument("--overwrite", action="store_true", help="replace --json")
    args = parser.parse_args(argv)
    try:
        args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error("--seeds takes integers, e.g. 1,2")
    bad = [t for t in args.targets if t not in TASKS]
    if bad:
        parser.error(f"unknown target task {bad[0]} (choose from {', '.join(TASKS)})")
    if not args.targets or not args.seeds:
        parser.error("--targets and --seeds need at least one value each")
    if min(args.pretrain_steps, args.finetune_steps, args.batch_size) < 1:
        parser.error("--pretrain_steps, --finetune_steps and --batch_size must be >= 1")
    if args.table_only and not args.json:
        parser.error("--table_only needs --json FILE")
    if args.json and Path(args.json).exists() and not (args.overwrite or args.table_only):
        parser.error(f"{args.json} exists; pass --overwrite to replace it")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    if args.table_only:
        saved = json.loads(Path(args.json).read_text())
        print(table(saved["records"], saved["baselines"], saved["settings"]), end="")
        return 0

    out_root = Path(args.out_dir)
    if args.val_path:
        train_path, val_path = args.train_path, args.val_path
    else:
        from src.holdout import split_folder
        try:
            train_dir, val_dir = split_folder(Path(args.train_path).resolve(), (out_root / "data").resolve())
        except (OSError, ValueError) as err:
            LOG.error("%s (give held-out images with --val_path)", err)
            return 2
        train_path, val_path = str(train_dir), str(val_dir)
    settings = {k: getattr(args, k) for k in SETTING_KEYS} | {"targets": args.targets}
    runs = plan(args, out_root, train_path, val_path)
    if args.dry_run:
        for run in runs:
            print(shlex.join(command(run, args)))
        return 0
    settings_file = out_root / "settings.json"
    if settings_file.is_file():
        old = json.loads(settings_file.read_text())
        changed = [k for k in SETTING_KEYS if old.get(k) != settings[k]]
        if changed:
            LOG.error("%s holds runs made with other settings (%s): use another --out_dir", out_root, ", ".join(changed))
            return 2
    out_root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(settings_file, json.dumps(settings, indent=1))

    status = Status()
    failures: List[str] = []
    records: List[Dict] = []
    for run in runs:
        if run.needs is not None and not run.needs.final_ckpt.is_file():
            failures.append(f"{run.name}: its pre-training {run.needs.name} did not finish")
            continue
        reason = train(run, args, status)
        if reason:
            failures.append(f"{run.name}: {reason}")
        elif run.task:
            record = score(run, args, status)
            (failures.append(f"{run.name}: {record['error']}") if "error" in record else records.append(record))
    baselines = {t: baseline(t, out_root, args, status) for t in args.targets}
    text = table(records, baselines, settings)
    print("\n" + text, end="")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(args.json), json.dumps({"settings": settings, "git": git_revision(),
                                                       "records": records, "baselines": baselines,
                                                       "failures": failures, "table": text}, indent=1))
        print(f"wrote {args.json}")
    for line in failures:
        LOG.error("%s", line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
