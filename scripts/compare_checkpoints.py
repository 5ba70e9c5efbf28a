"""Are two checkpoints the same weights? Bit-identical, or how far apart, parameter by parameter.

    python scripts/compare_checkpoints.py A.ckpt B.ckpt [--optimizer] [--atol 0]

Used to check that a run reproduces: e.g. the same training command in a fresh clone, stopped at a
step where the original run also saved (`--stop_after N`), must give bit-identical weights. Names
and shapes must match; values are compared in float64 (a float16 shipped file against its float32
source differs by float16 rounding, which `--atol` can allow). `--optimizer` also compares the
Adam moments of training checkpoints. Exit status 0 when the files agree within `--atol`, 1 if not.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from src.checkpoint import CheckpointError, read_checkpoint  # noqa: E402
from src.utils import fail, setup_logging  # noqa: E402

LOG = logging.getLogger("compare_checkpoints")


def compare_params(a: Dict[str, np.ndarray], b: Dict[str, np.ndarray]) -> Dict:
    """Names only in one side, shape mismatches, and the largest absolute difference per parameter."""
    common = sorted(set(a) & set(b))
    shapes = [k for k in common if np.shape(a[k]) != np.shape(b[k])]
    diffs = {k: float(np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)), initial=0.0))
             for k in common if k not in shapes}
    return {"only_a": sorted(set(a) - set(b)), "only_b": sorted(set(b) - set(a)), "shape_mismatch": shapes,
            "max_abs_diff": diffs, "identical": sum(d == 0.0 for d in diffs.values()), "compared": len(diffs)}


def _arrays(path: Path, optimizer: bool) -> Dict[str, np.ndarray]:
    params, meta = read_checkpoint(path)
    arrays = {k: v.asnumpy() for k, v in params.items()}
    if optimizer:
        arrays.update({k: v.asnumpy() for k, v in meta["optimizer"].items()})
    return arrays


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="first checkpoint (.ckpt)")
    parser.add_argument("b", help="second checkpoint (.ckpt)")
    parser.add_argument("--optimizer", action="store_true", help="also compare the optimizer state")
    parser.add_argument("--atol", type=float, default=0.0, help="largest difference still called equal")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    try:
        report = compare_params(_arrays(Path(args.a), args.optimizer), _arrays(Path(args.b), args.optimizer))
    except CheckpointError as err:
        fail(str(err))
    for key in ("only_a", "only_b", "shape_mismatch"):
        if report[key]:
            LOG.error("%s: %d parameter(s), e.g. %s", key.replace("_", " "), len(report[key]), report[key][0])
    diffs = report["max_abs_diff"]
    worst = max(diffs, key=diffs.get) if diffs else None
    LOG.info("%d of %d parameters bit-identical; largest difference %.3g%s", report["identical"],
             report["compared"], diffs[worst] if worst else 0.0, f" ({worst})" if worst else "")
    agree = not (report["only_a"] or report["only_b"] or report["shape_mismatch"]) and \
        all(d <= args.atol for d in diffs.values())
    print("same weights" + (" (bit-identical)" if agree and report["identical"] == report["compared"] else "")
          if agree else "different weights")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
