"""The results table of the shipped weights, every task, by one command (eval.py on every benchmark).

    python bench/bench_results.py [--ckpt_dir pretrained] [--json results.json] [--markdown results.md]
                                  [--quick | --limit N] [--tasks sr_x2 derain] [--cbm3d_json bench/cbm3d_sigma30.json ...]
                                  [--device_target CPU] [--from_json results.json] [--overwrite]

For each (task, set) row: Set5 and Set14 at sr_x2/x3/x4, CBSD68 at denoise_30/50, Rain100L for derain,
eval.py runs twice as a subprocess (`--json`): the shipped weights and `--baseline` (the degraded
input), each scored under the IPT protocol (Y) and on RGB in one eval.py run. The weights are the ones eval.py
picks by itself when no `--ckpt` is given (pretrained/ipt_tiny_TASK.ckpt, else
pretrained/ipt_tiny_pretrain.ckpt); `--ckpt_dir DIR` picks the same names from another folder and
passes them as `--ckpt`. The CBM3D column comes from bench/bench_cbm3d.py's `--json` files (bench/cbm3d*.json), if present;
`--from_json results.json` runs no eval and only re-renders an earlier `--json` with the current CBM3D files.

`--quick` (= `--limit 2`) scores the first 2 images of every set, for smoke tests: eval.py has no
image limit, so a temporary folder of symlinks to the first N images is made per set (Rain100L keeps
its paired layout; names are kept, so the denoising noise is the same as in a full run).

One status line per eval (updated in place on a terminal from eval.py's progress); each eval's
full output is kept in a log folder that is printed when an eval fails.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.image_io import list_images  # noqa: E402
from src.pairs import find_pairs  # noqa: E402
from src.tasks import TASKS, get_task  # noqa: E402
from src.utils import write_text_atomic  # noqa: E402
from src.weights import PRETRAIN_SHIPPED, default_checkpoint, shipped_name  # noqa: E402

LOG = logging.getLogger("bench_results")
DATA = "../shared/datasets"
# (task, set label, folder under ../shared/datasets), in table order.
ROWS: Tuple[Tuple[str, str, str], ...] = (
    ("sr_x2", "Set5", "CSet5"), ("sr_x3", "Set5", "CSet5"), ("sr_x4", "Set5", "CSet5"),
    ("sr_x2", "Set14", "CSet14"), ("sr_x3", "Set14", "CSet14"), ("sr_x4", "Set14", "CSet14"),
    ("denoise_30", "CBSD68", "CBSD68"), ("denoise_50", "CBSD68", "CBSD68"),
    ("derain", "Rain100L", "Rain100L"),
)
TASK_NAMES = tuple(TASKS)
PROGRESS = re.compile(r"eval (\d+)/(\d+) .*ETA (\S+)")


def rel(path: Path) -> str:
    """A path as the repo-root-relative string the project's docs use (../shared/...)."""
    path = Path(path).resolve()
    if not path.is_relative_to(ROOT.parent):  # outside the repo and its ../shared: say it in full
        return str(path)
    return os.path.relpath(path, ROOT)


# ----------------------------------------------------------------------------- subsets
def subset_folder(src: Path, dst: Path, limit: int, kind: str) -> Path:
    """A folder of symlinks to the first `limit` benchmark images of `src`, same names and layout."""
    dst.mkdir(parents=True, exist_ok=True)

    def link(target: Path, name: Path) -> None:
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target.resolve(), dst / name)

    if kind == "derain":  # the first pairs of any src.pairs layout (Rain100L: rainy/ + norain-ID)
        for pair in find_pairs(src).pairs[:limit]:
            for path in (pair.lq, pair.gt):
                link(path, path.relative_to(src))
        return dst
    for p in list_images(src)[:limit]:  # SR HR folders and clean denoising images
        link(p, p.relative_to(src))
    return dst


# ----------------------------------------------------------------------------- one eval
class Status:
    """One line per eval; on a terminal it is rewritten with eval.py's progress while it runs."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.width = 0

    def update(self, text: str) -> None:
        if self.tty:
            sys.stdout.write("\r" + text.ljust(self.width))
            sys.stdout.flush()
            self.width = len(text)

    def done(self, text: str) -> None:
        if self.tty:
            sys.stdout.write("\r" + text.ljust(self.width) + "\n")
            self.width = 0
        else:
            print(text)
        sys.stdout.flush()


def run_eval(label: str, args: List[str], out_json: Path, log_file: Path, status: Status) -> Dict:
    """Run eval.py with `args` (plus --json), stream its progress into the status line; its result dict."""
    cmd = [sys.executable, "eval.py", *args, "--json", str(out_json), "--overwrite", "true"]
    start = time.perf_counter()
    status.update(f"{label} starting")
    with open(log_file, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            match = PROGRESS.search(line)
            if match:
                status.update(f"{label} {match.group(1)}/{match.group(2)} ETA {match.group(3)}")
        code = proc.wait()
    wall = time.perf_counter() - start
    if code != 0 or not out_json.is_file():
        tail = [ln for ln in log_file.read_text(errors="replace").splitlines() if "WARNING" not in ln][-3:]
        status.done(f"{label} FAILED (exit {code}, {wall:.0f} s): {' | '.join(tail)}")
        return {"error": f"eval.py exited with {code}", "log": str(log_file), "wall_seconds": wall}
    result = json.loads(out_json.read_text())
    status.done(f"{label} PSNR {result['psnr']:.2f} SSIM {result['ssim']:.4f} "
                f"({result['images']} images, {wall:.0f} s)")
    result.pop("rows", None)
    result["wall_seconds"] = wall
    return result


# ----------------------------------------------------------------------------- table
def cell(result: Optional[Dict]) -> str:
    if not result or "psnr" not in result:
        return "-"
    return f"{result['psnr']:.2f} / {result['ssim']:.4f}"


def load_cbm3d(paths: Sequence[Path]) -> Dict[str, Dict]:
    """task -> CBM3D result from bench_cbm3d.py's JSON files (one per sigma may be run in parallel).

    Files that do not exist are ignored; a task found in two files is an error, not a silent pick.
    """
    found: Dict[str, Dict] = {}
    for path in paths:
        if not path.is_file():
            continue
        for r in json.loads(path.read_text()).get("results", []):
            if r["task"] in found:
                raise SystemExit(f"error: CBM3D {r['task']} is in more than one --cbm3d_json file")
            found[r["task"]] = r
    return found


def markdown(rows: List[Dict], header: str) -> str:
    lines = [header, "",
             "| task | set | images | baseline Y PSNR / SSIM | ours Y PSNR / SSIM | gain Y (dB) | "
             "baseline RGB PSNR / SSIM | ours RGB PSNR / SSIM | CBM3D Y | CBM3D RGB | weights |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for r in rows:
        ev = r["evals"]
        by, oy = ev.get("baseline_y"), ev.get("ours_y")
        gain = f"{oy['psnr'] - by['psnr']:+.2f}" if oy and by and "psnr" in oy and "psnr" in by else "-"
        c = r.get("cbm3d")
        cy = crgb = ""
        if c:
            mark = ""
            if c["images"] != r["images"]:
                mark = "*"
                notes.append(f"\\* CBM3D {r['task']}: on {c['images']} image(s), the other columns on {r['images']}")
            cy = f"{c['psnr_y']:.2f} / {c['ssim_y']:.4f}{mark}"
            crgb = f"{c['psnr_rgb']:.2f} / {c['ssim_rgb']:.4f}{mark}"
        lines.append(f"| {r['task']} | {r['set']} | {r['images'] or '-'} | {cell(by)} | {cell(oy)} | {gain} | "
                     f"{cell(ev.get('baseline_rgb'))} | {cell(ev.get('ours_rgb'))} | {cy} | {crgb} | "
                     f"{Path(r['weights']).name if r['weights'] else 'none'} |")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{rev}{' (dirty)' if dirty else ''}" if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ----------------------------------------------------------------------------- main
def attach_cbm3d(row: Dict, cbm3d: Dict[str, Dict]) -> None:
    """Put the CBM3D result of the row's task (if any) into the row, replacing an older one."""
    row.pop("cbm3d", None)
    if row["task"] in cbm3d:
        row["cbm3d"] = {k: cbm3d[row["task"]][k] for k in ("images", "psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")}


def run_rows(rows: Sequence[Tuple[str, str, str]], ckpt_dir: Path, shipped: bool, limit: int,
             device_target: str, work: Path, log_dir: Path) -> Tuple[List[Dict], int]:
    """eval.py on every (task, set) row, baseline and ours; returns the table rows and the failure count."""
    status = Status()
    total, n, failed = 2 * len(rows), 0, 0
    table: List[Dict] = []
    for task, label, folder in rows:
        data = (ROOT / DATA / folder).resolve()
        if limit:
            sub = work / "subsets" / folder
            data = sub if sub.is_dir() else subset_folder(data, sub, limit, "derain" if task == "derain" else "")
        weights = default_checkpoint(get_task(task), ckpt_dir)  # what eval.py picks from pretrained/
        row = {"task": task, "set": label, "data_path": f"{DATA}/{folder}", "images": 0, "limit": limit,
               "weights": rel(weights) if weights else None, "evals": {}}
        for model in ("baseline", "ours"):  # eval.py reports Y (IPT protocol) and RGB in one run
            n += 1
            name = f"[{n:2d}/{total}] {task:<10} {label:<8} {model:<8}"
            if model == "ours" and weights is None:
                status.done(f"{name} skipped: no {shipped_name(task)} or {shipped_name(PRETRAIN_SHIPPED)} in {ckpt_dir}")
                row["evals"][f"{model}_y"] = row["evals"][f"{model}_rgb"] = {"error": "no weights"}
                continue
            eval_args = ["--task", task, "--data_path", str(data), "--metric", "y", "--device_target", device_target]
            if model == "baseline":
                eval_args.append("--baseline")
            elif not shipped:
                eval_args += ["--ckpt", str(weights)]
            result = run_eval(name, eval_args, work / f"{task}_{folder}_{model}_y.json",
                              log_dir / f"{task}_{folder}_{model}_y.log", status)
            row["evals"][f"{model}_y"] = result
            if "error" in result:
                failed += 1
                continue
            result["data_path"] = row["data_path"]  # the set, not the temporary subset
            row["images"] = result["images"]
            row["evals"][f"{model}_rgb"] = dict(result, metric="rgb", psnr=result["psnr_rgb"], ssim=result["ssim_rgb"])
        table.append(row)
    return table, failed


def read_saved(path: Path) -> Dict:
    """An earlier --json of this script (for --from_json), or a one-line error."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: cannot read {path}: {err}")
    missing = [k for k in ("rows", "limit", "shipped", "ckpt_dir") if not isinstance(saved, dict) or k not in saved]
    if missing:
        raise SystemExit(f"error: {path} is not a bench_results.py --json file (no {', '.join(missing)})")
    return saved


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_dir", default="pretrained", help="folder of ipt_tiny_*.ckpt (default: the shipped ones)")
    parser.add_argument("--json", default="", help="write every eval's result here")
    parser.add_argument("--markdown", default="", help="write the table here")
    parser.add_argument("--quick", action="store_true", help="2 images per set (smoke test)")
    parser.add_argument("--limit", type=int, default=0, help="first N images per set (0 = all)")
    parser.add_argument("--tasks", nargs="+", default=list(TASK_NAMES), choices=TASK_NAMES, help="rows to run")
    parser.add_argument("--cbm3d_json", nargs="*", default=None,
                        help="bench_cbm3d.py's --json output(s) (default: bench/cbm3d*.json; none: no CBM3D column)")
    parser.add_argument("--from_json", default="",
                        help="run no eval: re-render an earlier --json with the current CBM3D files")
    parser.add_argument("--device_target", default="CPU", choices=("CPU", "GPU", "Ascend"))
    parser.add_argument("--log_dir", default="", help="keep eval.py's outputs here (default: a temporary folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --json / --markdown files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    for out in (args.json, args.markdown):
        if out and Path(out).exists() and not args.overwrite:
            parser.error(f"{out} exists; pass --overwrite to replace it")
    limit = 2 if args.quick and not args.limit else args.limit
    if limit < 0:
        parser.error("--limit must be >= 0")
    cbm3d_files = (sorted((ROOT / "bench").glob("cbm3d*.json")) if args.cbm3d_json is None
                   else [Path(p) for p in args.cbm3d_json])
    cbm3d = load_cbm3d(cbm3d_files)
    now = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"

    failed = 0
    if args.from_json:
        saved = read_saved(Path(args.from_json))
        table, limit, shipped, ckpt_label = saved["rows"], saved["limit"], saved["shipped"], saved["ckpt_dir"]
        git, date = saved.get("git", "unknown"), saved.get("date", f"re-rendered {now}")
        device_target = saved.get("device_target", args.device_target)
    else:
        ckpt_dir = Path(args.ckpt_dir)
        shipped = ckpt_dir.resolve() == (ROOT / "pretrained").resolve()  # eval.py finds these by itself
        ckpt_label, git, date, device_target = args.ckpt_dir, git_revision(), now, args.device_target
        rows = [r for r in ROWS if r[0] in args.tasks]
        for _, _, folder in rows:
            if not (ROOT / DATA / folder).is_dir():
                parser.error(f"benchmark folder not found: {rel(ROOT / DATA / folder)}")
        work = Path(tempfile.mkdtemp(prefix="bench_results_"))
        log_dir = Path(args.log_dir) if args.log_dir else work / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        try:
            table, failed = run_rows(rows, ckpt_dir, shipped, limit, device_target, work, log_dir)
        finally:
            if not failed and not args.log_dir:
                shutil.rmtree(work, ignore_errors=True)
    for row in table:
        attach_cbm3d(row, cbm3d)

    header = (f"IPT-tiny results ({'shipped weights' if shipped else 'weights from ' + ckpt_label}; "
              f"{'first ' + str(limit) + ' images per set' if limit else 'full sets'}; git {git}, "
              f"{date}). Y: IPT protocol (BT.601 luma, scale pixels cropped for SR); RGB: all channels.")
    text = markdown(table, header)
    print("\n" + text)
    if args.markdown:
        write_text_atomic(args.markdown, text)
    if args.json:
        saved = {"ckpt_dir": ckpt_label, "shipped": shipped, "limit": limit, "device_target": device_target,
                 "git": git, "date": date, "cbm3d_json": [rel(p) for p in cbm3d_files if p.is_file()] or None,
                 "rows": table}
        write_text_atomic(args.json, json.dumps(saved, indent=1))
        print(f"wrote {args.json}")
    if failed:
        print(f"{failed} eval(s) failed; logs in {log_dir}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
