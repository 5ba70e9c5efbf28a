"""Turn a training checkpoint into a shippable one: model weights only, stored in float16.

    python scripts/ship_weights.py --src runs/ipt_tiny/sr_x2/ipt_step00000300.ckpt \\
        --dst pretrained/ipt_tiny_sr_x2.ckpt [--overwrite]

A training checkpoint carries Adam's two moments per weight (three times the model's size) and
the run's position (step, seed, lr); none of that is needed to run or fine-tune the model, so it
is dropped. The task list and model options (`ipt_tasks`, `ipt_model`) are kept, because eval.py,
restore.py and fine-tuning build the model to fit them. Weights are stored in float16, which
halves the file again; `src.checkpoint.load_params_strict` widens them back to float32 on load.
The frozen mean-shift convolutions (`sub_mean.*`, `add_mean.*`) stay float32: they add the RGB
mean on the 0..255 scale, where float16's 0.06-0.125 steps would shift every output pixel.

The weights live in git, so the folder they go into (normally pretrained/) is kept under a size
budget: the command refuses a file that would take the folder past `--max_total_mb` (25 MB).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from src.checkpoint import CheckpointError, read_checkpoint, save_checkpoint  # noqa: E402
from src.config import Config, load_config  # noqa: E402
from src.utils import fail, setup_logging  # noqa: E402

LOG = logging.getLogger("ship_weights")

KEEP_META = ("ipt_tasks", "ipt_model")        # metadata the model is rebuilt from
FLOAT32_PREFIXES = ("sub_mean.", "add_mean.")  # frozen RGB-mean shift on the 0..255 scale
FLOAT16_MAX = float(np.finfo(np.float16).max)
MB = 1_000_000


class ShipError(ValueError):
    """A checkpoint that cannot be shipped as asked (reported in one line)."""


def folder_bytes(folder: Path, exclude: Sequence[Path] = ()) -> int:
    """Total size of the files under `folder`, leaving out `exclude` (a file about to be replaced)."""
    if not folder.is_dir():
        return 0
    skip = {p.resolve() for p in exclude}
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.resolve() not in skip)


def ship_params(params: Dict[str, "object"]) -> Tuple[Dict[str, np.ndarray], List[str]]:
    """Weights as numpy arrays, float16 except the mean shift (and anything float16 cannot hold).

    Returns (arrays, names kept in float32 because their values overflow float16).
    """
    out: Dict[str, np.ndarray] = {}
    too_large = []
    for name, param in params.items():
        value = np.asarray(param.asnumpy())
        if value.dtype.kind != "f" or name.startswith(FLOAT32_PREFIXES):
            out[name] = value
        elif np.abs(value).max(initial=0.0) > FLOAT16_MAX:
            too_large.append(name)
            out[name] = value.astype(np.float32)
        else:
            out[name] = value.astype(np.float16)
    return out, too_large


def model_cfg(meta: dict, config: Optional[str]) -> Config:
    """The config the source was made with: its `ipt_model` options, else `--config`."""
    if meta.get("ipt_model"):
        cfg = load_config(config) if config else load_config()
        cfg.update(json.loads(meta["ipt_model"]))
        return cfg
    if not config:
        raise ShipError("the source has no model options (ipt_model) in its metadata: "
                        "say which config it was made with, e.g. --config ipt_tiny")
    return load_config(config)


def ship(src: Path, dst: Path, overwrite: bool = False, max_total_mb: float = 25.0,
         config: Optional[str] = None) -> dict:
    """Write the shippable copy of `src` to `dst`; returns a summary (sizes, counts, dtypes)."""
    if dst.suffix != ".ckpt":
        raise ShipError(f"--dst must end in .ckpt, got {dst.name}")
    if dst.exists() and not overwrite:
        raise ShipError(f"{dst} exists; pass --overwrite to replace it")
    if src.resolve() == dst.resolve():
        raise ShipError("--src and --dst are the same file")
    params, meta = read_checkpoint(src, use_ema=True)  # a run with --ema_decay ships its average
    if not params:
        raise ShipError(f"{src} holds no model weights")
    if meta.get("weights") == "ema":
        LOG.info("%s: shipping its moving average of the weights (--ema_decay)", src.name)
    tasks = meta.get("ipt_tasks")
    if not tasks:
        raise ShipError(f"{src} has no task list (ipt_tasks) in its metadata: not a checkpoint of this project")
    cfg = model_cfg(meta, config)
    arrays, too_large = ship_params(params)
    for name in too_large:
        LOG.warning("%s has values beyond float16's range: kept in float32", name)
    dropped_opt = len(meta.get("optimizer") or {})
    dropped_meta = sorted(k for k in meta if k not in KEEP_META and k not in ("optimizer", "ema", "weights"))
    extra = {k: str(meta[k]) for k in KEEP_META if meta.get(k)}  # keep the source's strings verbatim

    dst.parent.mkdir(parents=True, exist_ok=True)
    others = folder_bytes(dst.parent, exclude=[dst] if dst.exists() else [])
    with tempfile.TemporaryDirectory(prefix=".ship", dir=dst.parent) as tmp:
        tmp_file = Path(tmp) / dst.name
        save_checkpoint(arrays, tmp_file, cfg, tasks=tuple(tasks.split(",")), extra=extra)
        size = tmp_file.stat().st_size
        total = others + size
        if total > max_total_mb * MB:
            raise ShipError(f"{dst.name} is {size / MB:.2f} MB: {dst.parent}/ would hold {total / MB:.2f} MB, "
                            f"over the {max_total_mb:g} MB budget (other files: {others / MB:.2f} MB)")
        os.replace(tmp_file, dst)
    src_size = src.stat().st_size
    summary = {
        "src": str(src), "dst": str(dst), "tasks": tasks, "src_bytes": src_size, "dst_bytes": size,
        "folder_bytes": total, "weights": len(arrays),
        "values": int(sum(a.size for a in arrays.values())),
        "float16": sum(1 for a in arrays.values() if a.dtype == np.float16),
        "float32": sorted(n for n, a in arrays.items() if a.dtype != np.float16),
        "dropped_optimizer_entries": dropped_opt, "dropped_metadata": dropped_meta,
    }
    LOG.info("dropped %d optimizer entries and metadata %s", dropped_opt, ", ".join(dropped_meta) or "-")
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, help="training checkpoint (train.py's ipt_step*.ckpt)")
    parser.add_argument("--dst", required=True, help="shipped file, e.g. pretrained/ipt_tiny_sr_x2.ckpt")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --dst")
    parser.add_argument("--max_total_mb", type=float, default=25.0,
                        help="size budget of --dst's folder in MB (10^6 bytes), this file included")
    parser.add_argument("--config", default=None,
                        help="config the source was made with (only for files without ipt_model metadata)")
    parser.add_argument("--log_level", default="INFO")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        s = ship(Path(args.src), Path(args.dst), args.overwrite, args.max_total_mb, args.config)
    except (ShipError, CheckpointError) as err:
        fail(str(err))
    print(f"{s['dst']}: {s['dst_bytes'] / MB:.2f} MB ({s['dst_bytes']} bytes; source {s['src_bytes'] / MB:.2f} MB), "
          f"tasks {s['tasks']}, {s['values']:,} values in {s['weights']} tensors "
          f"({s['float16']} float16, float32: {', '.join(s['float32']) or '-'}); "
          f"folder now {s['folder_bytes'] / MB:.2f} MB of {args.max_total_mb:g} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
