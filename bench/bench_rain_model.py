"""How close is our synthetic rain to Rain100L's? Statistics of the rain residual (rainy - clean).

    python bench/bench_rain_model.py [--rain100l ../shared/datasets/Rain100L] [--train ../shared/datasets/train]
                                     [--images 100] [--set layers=1,2 width=0.5,1.0 ...] [--json out.json]
                                     [--pairs 'norain-*.png']

Rain100L's residuals are measured on its 100 pairs; ours on the training images (T91 and
DIV2K crops, never a BSD image) with `src.degradations.add_rain`, image i seeded with i.
Only the degradation is compared, never a restoration: this is how the `RainParams` defaults
were set without scoring a model on the benchmark. `--set` overrides single fields
(`name=low,high`, or `name=value` for a scalar) to try other parameters. `--pairs norain-001.png`
measures one Rain100L image alone (the README's quick-start image).

Per image, on the grey residual r = mean over channels of (rainy - clean) / 255:
- coverage: fraction of pixels with r > 0.02; mean r over them; the 99th / 99.9th percentile of r;
- streak length: autocorrelation of r along the image's streak direction at 5, 15 and 30 pixels;
- streak width: autocorrelation across it at 1, 2 and 4 pixels;
- direction: the angle from vertical that maximises the autocorrelation at 15 pixels, and
  whether it is within 5 degrees of vertical (the mean is the share of such images);
- the correlation of r with the clean image's brightness where it rains (0 for additive rain,
  negative for a screen blend, which brightens dark pixels more);
- input PSNR(Y) of the rainy image.
Rows give the mean over images and, in brackets, their standard deviation; then the streak
width (across_1) of near-vertical and of slanted images apart, since Rain100L's upright streaks
are thinner.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.config import DATASETS_ROOT  # noqa: E402
from src.degradations import RainParams, add_rain  # noqa: E402
from src.image_io import read_image  # noqa: E402
from src.metrics import psnr  # noqa: E402

THRESHOLD = 0.02
ANGLES = np.arange(-45, 46, 2)
STATS = ("coverage", "mean_r", "p99", "p99_9", "along_5", "along_15", "along_30",
         "across_1", "across_2", "across_4", "abs_angle", "near_vertical", "background_corr", "input_psnr_y")


def _autocorr(z: np.ndarray, var: float, dy: float, dx: float) -> float:
    """Autocorrelation of the zero-mean map z at a (possibly fractional, rounded) offset."""
    dy, dx = int(round(dy)), int(round(dx))
    h, w = z.shape
    a = z[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
    b = z[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return float((a * b).mean() / var)


def residual_stats(clean: np.ndarray, rainy: np.ndarray) -> Dict[str, float]:
    r = (rainy.astype(np.float64) - clean.astype(np.float64)).mean(axis=2) / 255.0
    z = r - r.mean()
    var = float((z * z).mean()) or 1.0
    angle = float(ANGLES[np.argmax([_autocorr(z, var, 15 * np.cos(np.deg2rad(a)), 15 * np.sin(np.deg2rad(a)))
                                    for a in ANGLES])])
    t = np.deg2rad(angle)
    along = lambda d: _autocorr(z, var, d * np.cos(t), d * np.sin(t))  # noqa: E731
    across = lambda d: _autocorr(z, var, -d * np.sin(t), d * np.cos(t))  # noqa: E731
    streak = r > THRESHOLD
    background = clean.astype(np.float64).mean(axis=2) / 255.0
    return {
        "coverage": float(streak.mean()),
        "mean_r": float(r[streak].mean()) if streak.any() else 0.0,
        "p99": float(np.percentile(r, 99)),
        "p99_9": float(np.percentile(r, 99.9)),
        "along_5": along(5), "along_15": along(15), "along_30": along(30),
        "across_1": across(1), "across_2": across(2), "across_4": across(4),
        "abs_angle": abs(angle),
        "near_vertical": float(abs(angle) <= 5),
        "background_corr": (float(np.corrcoef(background[streak], r[streak])[0, 1])
                            if streak.sum() > 10 and background[streak].std() > 0 else 0.0),
        "input_psnr_y": float(psnr(rainy, clean)),
    }


def summarise(rows: List[Dict[str, float]]) -> Dict[str, List[float]]:
    return {k: [float(np.mean([r[k] for r in rows])), float(np.std([r[k] for r in rows]))] for k in STATS}


def parse_overrides(items: List[str]) -> Dict[str, object]:
    known = {f.name for f in fields(RainParams)}
    out: Dict[str, object] = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in known or not value:
            raise SystemExit(f"error: --set {item!r}: expected NAME=LOW,HIGH or NAME=VALUE with NAME in {sorted(known)}")
        parts = [float(v) for v in value.split(",")]
        cast = int if name in ("layers", "length") else float
        out[name] = tuple(cast(v) for v in parts) if len(parts) > 1 else cast(parts[0])
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rain100l", default=str(DATASETS_ROOT / "Rain100L"))
    parser.add_argument("--train", default=str(DATASETS_ROOT / "train"))
    parser.add_argument("--images", type=int, default=100, help="training images to rain on")
    parser.add_argument("--pairs", default="norain-*.png", help="which Rain100L pairs (a glob of the clean files)")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="NAME=LOW,HIGH",
                        help="RainParams overrides; several after one --set or in repeated --set flags")
    parser.add_argument("--json", help="write both summaries here")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    bench = Path(args.rain100l)
    pairs = sorted(bench.glob(args.pairs))
    if not pairs:
        raise SystemExit(f"error: no {args.pairs} in {bench}")
    theirs = [residual_stats(read_image(p), read_image(bench / "rainy" / p.name.replace("norain", "rain")))
              for p in pairs]

    params = RainParams(**parse_overrides(args.set))
    train = sorted(p for p in Path(args.train).rglob("*") if p.suffix.lower() in (".png", ".bmp"))
    if not train:
        raise SystemExit(f"error: no training images in {args.train}")
    step = max(1, len(train) // args.images)
    ours = []
    for i, path in enumerate(train[::step][:args.images]):
        clean = read_image(path)
        ours.append(residual_stats(clean, add_rain(clean, seed=i, params=params)))

    summary = {"rain100l": summarise(theirs), "ours": summarise(ours), "params": params.__dict__}
    logging.info("%-13s %18s %18s", "statistic", f"Rain100L ({len(theirs)})", f"ours ({len(ours)})")
    for k in STATS:
        (a, sa), (b, sb) = summary["rain100l"][k], summary["ours"][k]
        logging.info("%-13s %9.3f (%6.3f) %9.3f (%6.3f)", k, a, sa, b, sb)
    for name, rows in (("Rain100L", theirs), ("ours", ours)):
        upright = [r["across_1"] for r in rows if r["near_vertical"]]
        slanted = [r["across_1"] for r in rows if not r["near_vertical"]]
        logging.info("%s across_1: %.3f on %d near-vertical images, %.3f on %d others", name,
                     np.mean(upright) if upright else float("nan"), len(upright),
                     np.mean(slanted) if slanted else float("nan"), len(slanted))
    logging.info("params: %s", params)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
