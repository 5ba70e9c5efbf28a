"""Per image, is one set of results better than another? Two `eval.py --json` files of one set.

    python eval.py --task derain --data_path ../shared/datasets/Rain100L --ckpt old.ckpt --json old.json
    python eval.py --task derain --data_path ../shared/datasets/Rain100L --json new.json
    python bench/compare_per_image.py old.json new.json [--metric psnr_y] [--worst 5]

Prints how many images NEW scores higher than OLD, the median and range of the difference, the
image(s) at the median (the middle one, or the middle two of an even count: a typical image to show
a change on, chosen by rank rather than by eye), and the images that lost most. A mean hides which
images a change hurts; this is how the derain rain-model change was checked
(pretrained/logs/pilots/README.md).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np


def per_image(path: str, metric: str) -> Dict[str, float]:
    rows = json.loads(Path(path).read_text()).get("rows") or []
    if not rows:
        raise SystemExit(f"error: {path} has no per-image rows (write it with eval.py --json)")
    return {row["name"]: float(row[metric]) for row in rows}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--metric", default="psnr_y", help="a per-image field of eval.py's rows")
    parser.add_argument("--worst", type=int, default=5, help="list this many images that lost most")
    args = parser.parse_args(argv)
    old, new = per_image(args.old, args.metric), per_image(args.new, args.metric)
    names = sorted(old)
    if set(names) != set(new):
        raise SystemExit(f"error: {args.old} and {args.new} score different images")
    diff = np.array([new[n] - old[n] for n in names])
    print(f"{args.metric}: new better on {int((diff > 0).sum())} of {len(names)} images; difference "
          f"median {np.median(diff):+.2f}, mean {diff.mean():+.2f}, from {diff.min():+.2f} to {diff.max():+.2f}")
    order = np.argsort(diff, kind="stable")
    middle = order[(len(names) - 1) // 2:len(names) // 2 + 1]
    print("at the median: " + ", ".join(f"{names[i]} ({old[names[i]]:.2f} -> {new[names[i]]:.2f}, {diff[i]:+.2f})"
                                        for i in middle))
    for i in order[:args.worst]:
        print(f"  {names[i]}: {old[names[i]]:.2f} -> {new[names[i]]:.2f} ({diff[i]:+.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
