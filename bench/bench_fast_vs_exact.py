"""Fast tiling against the official (exact) stitching: PSNR difference and tiles, on real benchmarks.

    python bench/bench_fast_vs_exact.py [--ckpt FILE] [--limit 10] [--json out.json]

Runs eval.py twice per case (`--tiling exact`, `--tiling fast`) on Set5 x2 and CBSD68 sigma 30
and prints mean PSNR/SSIM (Y), the difference, tiles per image and seconds per image. The fast
mode's overlap and window (src/tiling.py) are acceptable when |PSNR(fast) - PSNR(exact)| <= 0.05 dB.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.tiling import resolve_overlap  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
CASES = [("sr_x2", "CSet5"), ("denoise_30", "CBSD68")]


def subset(folder: Path, limit: int, tmp: Path) -> Path:
    """A folder of symlinks to the first `limit` images (all when limit is 0)."""
    if not limit:
        return folder
    out = tmp / folder.name
    out.mkdir()
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")[:limit]:
        os.symlink(path.resolve(), out / path.name)
    return out


def run_eval(task: str, data: Path, ckpt: str, tiling: str, extra: list, tmp: Path) -> dict:
    out = tmp / f"{task}_{tiling}.json"
    cmd = [sys.executable, "eval.py", "--task", task, "--data_path", str(data), "--tiling", tiling,
           "--json", str(out), "--log_level", "WARNING", *extra]
    if ckpt:
        cmd += ["--ckpt", ckpt]
    subprocess.run(cmd, cwd=ROOT, check=True)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="", help="checkpoint (default: the shipped weights)")
    parser.add_argument("--limit", type=int, default=0, help="first N images of each set (0 = all)")
    parser.add_argument("--overlap", type=int, default=None, help="fast-mode overlap (default: the tiler's)")
    parser.add_argument("--device_target", default="CPU")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for task, folder in CASES:
            data = subset(DATASETS / folder, args.limit, tmp)
            extra = ["--device_target", args.device_target]
            res = {"exact": run_eval(task, data, args.ckpt, "exact", extra, tmp),
                   "fast": run_eval(task, data, args.ckpt, "fast", extra + (
                       ["--tile_overlap", str(args.overlap)] if args.overlap is not None else []), tmp)}
            rows.append({
                "task": task, "set": folder, "images": res["fast"]["images"],
                **{f"{t}_{k}": res[t][k] for t in res for k in ("psnr", "ssim", "seconds_per_image")},
                **{f"{t}_tiles": sum(r["tiles"] for r in res[t]["rows"]) / max(res[t]["images"], 1) for t in res},
                "psnr_diff": res["fast"]["psnr"] - res["exact"]["psnr"],
            })
    print(f"{'task':<11} {'set':<7} {'n':>3} {'exact PSNR':>10} {'fast PSNR':>10} {'diff dB':>8} "
          f"{'tiles ex/fast':>14} {'s/img ex/fast':>14}")
    for r in rows:
        print(f"{r['task']:<11} {r['set']:<7} {r['images']:>3} {r['exact_psnr']:>10.3f} {r['fast_psnr']:>10.3f} "
              f"{r['psnr_diff']:>+8.3f} {r['exact_tiles']:>7.0f}/{r['fast_tiles']:<6.0f} "
              f"{r['exact_seconds_per_image']:>6.2f}/{r['fast_seconds_per_image']:<6.2f}")
    if args.json:
        # The overlap in force (a missing --overlap is the tiler's default, recorded as its number).
        Path(args.json).write_text(json.dumps({"ckpt": args.ckpt, "limit": args.limit,
                                               "overlap": resolve_overlap(args.overlap), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
