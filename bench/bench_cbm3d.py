"""CBM3D on the noisy CBSD68 images eval.py scores: the classical reference row of the denoising table.

    python bench/bench_cbm3d.py [--sigma 30 50] [--limit N] [--data_path ../shared/datasets/CBSD68]
                                [--profile np] [--json bench/cbm3d.json] [--overwrite | --resume]

The noisy images are made by `src.benchmarks.open_benchmark(..., 'denoise', sigma=s, seed=0)`, the
code eval.py uses (noise seeded per image name, float, clipped to 0..255), so CBM3D and IPT see the
same pixels. CBM3D is `bm3d.bm3d_rgb` (Makinen, Azzari, Foi; PyPI package `bm3d`): image on the 0..1
scale, noise std sigma/255, opponent colour space, profile 'np'. Its output is scaled back, quantized
(clip + round, as eval.py does with a network's output) and scored with `src.metrics` on Y and on
RGB, no border crop. bench/bench_results.py reads the `--json` file for its CBM3D column.

`bm3d` is an optional extra, not a runtime dependency. Install it without letting pip move numpy:
    pip install bm3d "numpy<2"
A full run (68 images x 2 sigmas) takes a while on 2 cores: see the s/image column of a --limit run.
The `--json` file is rewritten after every image, so an interrupted run loses at most one image:
`--resume` keeps the rows already in it (same package, profile, data and noise seed) and scores
only the rest, e.g. a `--limit 12` file grows to all 68 images with `--resume`.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.benchmarks import open_benchmark  # noqa: E402
from src.metrics import psnr, quantize, ssim  # noqa: E402
from src.utils import Progress, fail, setup_logging, write_text_atomic  # noqa: E402

LOG = logging.getLogger("bench_cbm3d")
DEFAULT_DATA = "../shared/datasets/CBSD68"


def import_bm3d():
    """The optional bm3d package, or a one-line message on how to install it."""
    try:
        import bm3d
    except ImportError:
        fail('the optional package bm3d is not installed: pip install bm3d "numpy<2"')
    return bm3d


def bm3d_package() -> str:
    """'bm3d VERSION' of the installed package (recorded so a resumed run cannot mix versions)."""
    import_bm3d()
    from importlib.metadata import version
    return f"bm3d {version('bm3d')}"


def cbm3d(noisy: np.ndarray, sigma: float, profile: str = "np") -> np.ndarray:
    """CBM3D (gray images: BM3D) of a 0..255 float image with noise std `sigma` on that scale."""
    bm3d = import_bm3d()
    z = np.asarray(noisy, np.float64) / 255.0
    if z.ndim == 2:
        out = bm3d.bm3d(z, sigma_psd=sigma / 255.0, profile=profile)
    else:
        out = bm3d.bm3d_rgb(z, sigma_psd=sigma / 255.0, profile=profile)
    return np.asarray(out, np.float64) * 255.0


def summarize(sigma: float, rows: List[Dict], of: int) -> Dict:
    """One sigma's result: the per-image rows and their means."""
    mean = lambda key: float(np.mean([r[key] for r in rows])) if rows else float("nan")  # noqa: E731
    return {"task": f"denoise_{sigma:g}", "sigma": sigma, "images": len(rows), "of": of,
            "psnr_y": mean("psnr_y"), "ssim_y": mean("ssim_y"), "psnr_rgb": mean("psnr_rgb"),
            "ssim_rgb": mean("ssim_rgb"), "seconds_per_image": mean("seconds"), "rows": rows}


def run_sigma(data_path: Path, sigma: float, limit: int, noise_seed: int, profile: str,
              done: Sequence[Dict] = (), save: Callable[[Dict], None] = lambda result: None) -> Dict:
    """Denoise and score the first `limit` images (0 = all) at one noise level.

    Rows in `done` (from a resumed --json) are kept, not recomputed; `save` gets the partial
    result after every image so an interrupted run keeps what it finished.
    """
    bench = open_benchmark(data_path, "denoise", sigma=sigma, seed=noise_seed)
    total = min(len(bench), limit) if limit else len(bench)
    known = {row["name"]: row for row in done}
    rows: List[Dict] = []
    todo = sum(1 for name in bench.names[:total] if name not in known)
    if known:
        LOG.info("sigma %g: %d image(s) kept from the resumed file, %d to do", sigma, total - todo, todo)
    progress = Progress(todo, f"cbm3d sigma {sigma:g}", logger=LOG)
    computed = 0
    for item in bench:
        if len(rows) >= total:
            break
        if item.name in known:
            rows.append(known[item.name])
            continue
        start = time.perf_counter()
        out = quantize(cbm3d(item.input, sigma, profile))
        seconds = time.perf_counter() - start
        row = {"name": item.name, "seconds": seconds,
               "psnr_y": psnr(out, item.target, 0, "y"), "ssim_y": ssim(out, item.target, 0, "y"),
               "psnr_rgb": psnr(out, item.target, 0, "rgb"), "ssim_rgb": ssim(out, item.target, 0, "rgb"),
               "input_psnr_y": psnr(quantize(item.input), item.target, 0, "y")}
        rows.append(row)
        computed += 1
        LOG.info("sigma %g %-10s Y %.2f dB / %.4f  RGB %.2f dB / %.4f  %.1f s", sigma, item.name,
                 row["psnr_y"], row["ssim_y"], row["psnr_rgb"], row["ssim_rgb"], seconds)
        save(summarize(sigma, rows, len(bench)))
        progress.update(computed)
    for skipped in bench.skipped:
        LOG.error("skipped %s: %s", skipped.path, skipped.reason)
    return summarize(sigma, rows, len(bench))


def resumed_results(path: Path, settings: Dict) -> Dict[float, Dict]:
    """Per-sigma results of an earlier --json run made with the same settings (else a one-line error)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        fail(f"cannot resume from {path}: {err}")
    for key, value in settings.items():
        if old.get(key) != value:
            fail(f"cannot resume from {path}: it was made with {key}={old.get(key)!r}, this run has {value!r}")
    return {float(r["sigma"]): r for r in old.get("results", [])}


def write_json(path: Path, payload: Dict) -> None:
    """Replace `path` atomically: a crash mid-write leaves the previous version."""
    write_text_atomic(path, json.dumps(payload, indent=1))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigma", type=float, nargs="+", default=[30.0, 50.0], help="noise levels (0..255)")
    parser.add_argument("--limit", type=int, default=0, help="first N images only (0 = all 68)")
    parser.add_argument("--data_path", default=DEFAULT_DATA, help="clean colour images (CBSD68)")
    parser.add_argument("--noise_seed", type=int, default=0, help="eval.py's --noise_seed (default 0)")
    parser.add_argument("--profile", default="np", help="bm3d profile (np, refilter, vn, high, ...)")
    parser.add_argument("--device_target", default="CPU", help="unused: CBM3D runs on the CPU whatever this says")
    parser.add_argument("--json", default="", help="write the results here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.add_argument("--resume", action="store_true",
                        help="keep the images already scored in --json and do the rest")
    parser.add_argument("--log_level", default="INFO")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    if args.resume and args.overwrite:
        fail("--resume and --overwrite contradict each other: pick one")
    if args.resume and not args.json:
        fail("--resume needs --json (the file to continue)")
    json_path = Path(args.json) if args.json else None
    if json_path and json_path.exists() and not (args.overwrite or args.resume):
        fail(f"{args.json} exists; pass --resume to continue it or --overwrite to replace it")
    if args.limit < 0:
        fail("--limit must be >= 0")
    data_path = Path(args.data_path)
    if not data_path.is_dir():
        fail(f"data_path not found: {data_path}")
    settings = {"method": "CBM3D", "package": bm3d_package(), "profile": args.profile,
                "data_path": args.data_path, "noise_seed": args.noise_seed}
    done = resumed_results(json_path, settings) if args.resume and json_path.exists() else {}
    # sigmas of a resumed file that this run does not touch stay in it
    results: List[Dict] = [r for sigma, r in done.items() if sigma not in {float(s) for s in args.sigma}]

    def save(partial: Optional[Dict] = None) -> None:
        """Write the finished sigmas (and the one in progress) to --json, if given."""
        if json_path:
            write_json(json_path, {**settings, "limit": args.limit, "metric_crop": 0,
                                   "results": sorted(results + ([partial] if partial else []),
                                                     key=lambda r: r["sigma"])})

    for sigma in args.sigma:
        results.append(run_sigma(data_path, sigma, args.limit, args.noise_seed, args.profile,
                                 done=done.get(float(sigma), {}).get("rows", ()), save=save))
    print(f"\nCBM3D ({settings['package']}, profile {args.profile}) on {data_path.name}, "
          f"noise seed {args.noise_seed}; Y and RGB, no border crop")
    print("| task | images | PSNR Y | SSIM Y | PSNR RGB | SSIM RGB | s/image |")
    print("|---|---|---|---|---|---|---|")
    for r in sorted(results, key=lambda r: r["sigma"]):
        print(f"| {r['task']} | {r['images']}/{r['of']} | {r['psnr_y']:.2f} | {r['ssim_y']:.4f} | "
              f"{r['psnr_rgb']:.2f} | {r['ssim_rgb']:.4f} | {r['seconds_per_image']:.1f} |")
    if json_path:
        save()
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
