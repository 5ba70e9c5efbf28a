"""Loss and validation curves of train.py runs as one PNG (OpenCV only: no plotting dependency).

    python scripts/plot_losses.py RUN_DIR [RUN_DIR ...] [--out curves.png]

Reads each run folder's metrics.jsonl (written by train.py: one record per logged step and per
validated task) and draws, per run, the L1 loss of every task against the step (smoothed over a
window, one colour per task) and, when the run validated, the validation PSNR of every task.
The default output is RUN_DIR/curves.png for one run.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from src.train_loop import METRICS_FILE, read_metrics  # noqa: E402

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def run_series(run_dir: Path) -> Tuple[Dict[str, List[Tuple[int, float]]], Dict[str, List[Tuple[int, float]]]]:
    """(task -> [(step, l1)], task -> [(step, val PSNR)]) of one run."""
    train: Dict[str, List[Tuple[int, float]]] = defaultdict(list)
    val: Dict[str, List[Tuple[int, float]]] = defaultdict(list)
    for rec in read_metrics(run_dir):
        if rec.get("kind") == "train":
            train[rec["task"]].append((rec["step"], rec["l1"]))
        elif rec.get("kind") == "val":
            val[rec["task"]].append((rec["step"], rec["val_psnr"]))
    return dict(train), dict(val)


def draw_panel(series: Dict[str, List[Tuple[int, float]]], title: str, ylabel: str = "L1",
               size=(900, 420), from_zero: bool = True, smoothing: bool = True) -> np.ndarray:
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 70, 170, 30, 40
    points = [p for s in series.values() for p in s]
    cv2.putText(img, title, (left, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    if not points:
        return img
    steps = np.array([p[0] for p in points], float)
    values = np.array([p[1] for p in points], float)
    x0, x1 = steps.min(), max(steps.max(), steps.min() + 1)
    if from_zero:
        y0, y1 = 0.0, float(np.percentile(values, 99)) * 1.05 or 1.0
    else:  # PSNR: the spread matters, not the distance from 0
        pad = max(0.1, 0.05 * (values.max() - values.min()))
        y0, y1 = float(values.min()) - pad, float(values.max()) + pad
    sx = lambda s: int(left + (s - x0) / (x1 - x0) * (w - left - right))  # noqa: E731
    sy = lambda v: int(h - bottom - (min(v, y1) - y0) / (y1 - y0) * (h - top - bottom))  # noqa: E731
    cv2.rectangle(img, (left, top), (w - right, h - bottom), (0, 0, 0), 1)
    for frac in np.linspace(0, 1, 5):
        v = y0 + frac * (y1 - y0)
        cv2.putText(img, f"{v:.2f}" if y1 - y0 < 5 else f"{v:.1f}", (5, sy(v) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        s = x0 + frac * (x1 - x0)
        cv2.putText(img, f"{int(s)}", (sx(s) - 10, h - bottom + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
    cv2.putText(img, "step", (w // 2 - 20, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, ylabel, (8, top - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for k, (task, pts) in enumerate(sorted(series.items())):
        colour = COLOURS[k % len(COLOURS)][::-1]
        pts = sorted(pts)
        vals = np.array([v for _, v in pts])
        win = max(1, len(vals) // 30) if smoothing else 1
        smooth = np.convolve(vals, np.ones(win) / win, mode="valid")
        xy = np.array([[sx(pts[i + win - 1][0]), sy(v)] for i, v in enumerate(smooth)], np.int32)
        if len(xy) > 1:
            cv2.polylines(img, [xy], False, colour, 2, cv2.LINE_AA)
        if not smoothing or len(xy) == 1:  # validation points, or a task trained at one logged step
            for x, y in xy:
                cv2.circle(img, (int(x), int(y)), 3, colour, -1, cv2.LINE_AA)
        cv2.putText(img, task, (w - right + 10, top + 20 + 20 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1,
                    cv2.LINE_AA)
    return img


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="train.py out_dir folders (each with metrics.jsonl)")
    parser.add_argument("--out", default="", help="PNG to write (default: RUN_DIR/curves.png for one run)")
    args = parser.parse_args(argv)
    if not args.out and len(args.runs) > 1:
        parser.error("--out is needed for several runs")
    panels = []
    for run in map(Path, args.runs):
        if not (run / METRICS_FILE).is_file():
            print(f"error: {run / METRICS_FILE} not found (not a train.py run folder?)", file=sys.stderr)
            return 2
        train, val = run_series(run)
        panels.append(draw_panel(train, f"{run.name}: training L1 (smoothed)"))
        if val:
            panels.append(draw_panel(val, f"{run.name}: validation PSNR (dB, Y)", ylabel="dB",
                                     from_zero=False, smoothing=False))
    out = Path(args.out) if args.out else Path(args.runs[0]) / "curves.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), np.concatenate(panels, axis=0)):
        print(f"error: could not write {out}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
