"""MATLAB-bicubic resize speed (src/degradations.py imresize) on a real 512x512 image.

    python bench/bench_resize.py [--repeat 5] [--budget 0.5] [--json out.json]

The SR benchmarks and every SR training sample go through imresize, so a slow path (a per-pixel
loop instead of the two matrix products) would show in eval and data-loading times. This used to be
a wall-clock assertion in tests/test_degradations.py, which failed on a loaded machine; the tests
now check the values (tests/test_degradations.py) and the speed is measured here: median of
`--repeat` calls per case, and exit 1 if the 0.25 downscale of lenna takes over `--budget` seconds.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.degradations import imresize  # noqa: E402
from src.image_io import read_image  # noqa: E402
from src.utils import setup_logging, write_text_atomic  # noqa: E402

LOG = logging.getLogger("bench_resize")
IMAGE = ROOT.parent / "shared" / "datasets" / "CSet14" / "lenna.png"
SCALES = (0.25, 1 / 3, 0.5, 2.0, 3.0, 4.0)


def time_call(fn, repeat: int) -> float:
    """Median wall time of `repeat` calls (the first one included: there is no compile step)."""
    times: List[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.5, help="seconds allowed for the x0.25 uint8 case")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    img = read_image(IMAGE)
    rows: List[Dict] = []
    for scale in SCALES:
        for dtype in ("uint8", "float32"):
            x = img if dtype == "uint8" else img.astype("float32")
            seconds = time_call(lambda: imresize(x, scale), args.repeat)
            rows.append({"scale": scale, "dtype": dtype, "seconds": seconds})
            LOG.info("imresize %dx%d %s x%.3g: %.4f s", img.shape[1], img.shape[0], dtype, scale, seconds)
    key = next(r["seconds"] for r in rows if r["scale"] == 0.25 and r["dtype"] == "uint8")
    if args.json:
        write_text_atomic(args.json, json.dumps({"image": IMAGE.name, "repeat": args.repeat, "rows": rows}, indent=1))
    if key > args.budget:
        LOG.warning("x0.25 took %.3f s, over the %.2f s budget: is the machine loaded, or the matrix path lost?",
                    key, args.budget)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
