"""Plot training loss curves from train.py logs as a PNG (OpenCV only: no plotting dependency).

    python scripts/plot_losses.py --log runs/tiny/train.log [--log more.log ...] --out losses.png

Reads the `step N/M task T loss L (l1 A contrastive C)` lines train.py logs, and draws the L1 loss
of every task against the step, smoothed over a window, one colour per task, one panel per log.
"""
from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np

LINE = re.compile(r"step (\d+)/\d+ task (\S+) loss ([\d.naif]+) \(l1 ([\d.naif]+) contrastive ([\d.naif]+)\)")
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def read_log(path: Path) -> Dict[str, List[Tuple[int, float]]]:
    """task -> [(step, l1)] from one log."""
    series: Dict[str, List[Tuple[int, float]]] = defaultdict(list)
    for line in path.read_text(errors="replace").splitlines():
        match = LINE.search(line)
        if match:
            series[match.group(2)].append((int(match.group(1)), float(match.group(4))))
    return dict(series)


def draw_panel(series: Dict[str, List[Tuple[int, float]]], title: str, size=(900, 420)) -> np.ndarray:
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
    y0, y1 = 0.0, float(np.percentile(values, 99)) * 1.05 or 1.0
    sx = lambda s: int(left + (s - x0) / (x1 - x0) * (w - left - right))  # noqa: E731
    sy = lambda v: int(h - bottom - (min(v, y1) - y0) / (y1 - y0) * (h - top - bottom))  # noqa: E731
    cv2.rectangle(img, (left, top), (w - right, h - bottom), (0, 0, 0), 1)
    for frac in np.linspace(0, 1, 5):
        v = y0 + frac * (y1 - y0)
        cv2.putText(img, f"{v:.1f}", (5, sy(v) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        s = x0 + frac * (x1 - x0)
        cv2.putText(img, f"{int(s)}", (sx(s) - 10, h - bottom + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
    cv2.putText(img, "step", (w // 2 - 20, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "L1", (8, top - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for k, (task, pts) in enumerate(sorted(series.items())):
        colour = COLOURS[k % len(COLOURS)][::-1]
        pts = sorted(pts)
        vals = np.array([v for _, v in pts])
        win = max(1, len(vals) // 30)
        smooth = np.convolve(vals, np.ones(win) / win, mode="valid")
        xy = np.array([[sx(pts[i + win - 1][0]), sy(v)] for i, v in enumerate(smooth)], np.int32)
        if len(xy) > 1:
            cv2.polylines(img, [xy], False, colour, 2, cv2.LINE_AA)
        cv2.putText(img, task, (w - right + 10, top + 20 + 20 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1,
                    cv2.LINE_AA)
    return img


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", action="append", required=True, help="a train.py log (repeatable)")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args()
    panels = [draw_panel(read_log(Path(p)), f"{Path(p).parent.name}/{Path(p).name}") for p in args.log]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), np.concatenate(panels, axis=0)):
        raise SystemExit(f"error: could not write {out}")


if __name__ == "__main__":
    main()
