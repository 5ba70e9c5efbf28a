"""The .ckpt format: written atomically with the model's description, parameters loaded strictly.

MindSpore's `load_param_into_net` skips missing and unexpected names without a word, so a 4-layer
config would quietly run half of a 12-layer file. Every load here checks names and shapes both
ways and says in one line what differs. Each file also records the tasks and model options it was
made with (`ipt_tasks`, `ipt_model`), so a model can be built to fit a checkpoint and a mismatch
is reported by option name rather than by tensor shape (src/weights.py: which file, and loading a
model from it).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import mindspore as ms
from mindspore import nn

from src.config import Config
from src.utils import publish, short_reason

# The options that decide the network's parameters (and so must agree between config and file).
MODEL_KEYS = ("n_feats", "n_colors", "patch_size", "patch_dim", "num_heads", "num_layers",
              "num_queries", "no_norm", "no_mlp", "no_pos", "out_proj_bias")
OPTIMIZER_PREFIX = "optimizer."  # training state saved beside the weights (moments, step counts)
EMA_PREFIX = "ema."              # the weights' moving average (--ema_decay), saved beside them


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or does not fit the model."""


def model_options(cfg: Config) -> dict:
    opts = {k: cfg[k] for k in MODEL_KEYS}
    if not opts["num_queries"]:
        opts["num_queries"] = len(cfg.tasks)
    return opts


def save_checkpoint(params: Dict[str, np.ndarray] | nn.Cell, path: str | Path, cfg: Config,
                    tasks: Optional[tuple] = None, extra: Optional[dict] = None) -> Path:
    """Write a .ckpt atomically (temp file + rename: a killed run never leaves a truncated file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(params, nn.Cell):
        tasks = tasks or tuple(t.name for t in params.tasks)
        items = [{"name": p.name, "data": p} for p in params.get_parameters()]
    else:
        items = [{"name": k, "data": ms.Tensor(np.ascontiguousarray(v))} for k, v in params.items()]
    tasks = tuple(tasks or cfg.tasks)
    opts = model_options(Config(cfg, tasks=list(tasks)))
    append = {"ipt_tasks": ",".join(tasks), "ipt_model": json.dumps(opts, sort_keys=True)}
    append.update(extra or {})
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.ckpt")  # MindSpore insists on .ckpt
    try:
        ms.save_checkpoint(items, str(tmp), append_dict=append)
        publish(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_checkpoint(path: str | Path, use_ema: bool = False) -> Tuple[Dict[str, ms.Parameter], dict]:
    """Parameters and metadata of a .ckpt, with a one-line error for a missing or foreign file.

    Entries named `optimizer.*` (training state) are returned in `meta["optimizer"]`, and the
    moving average `ema.*` of the weights in `meta["ema"]`. With ``use_ema`` a file that has
    the average returns it as the weights (what inference, export and fine-tuning should use).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix in (".pt", ".pth"):
        raise CheckpointError(f"{path} is a PyTorch file: convert it first with "
                              f"`python convert.py --src {path} --dst {path.with_suffix('.ckpt').name}`")
    try:
        data = ms.load_checkpoint(str(path))
    except Exception as err:  # MindSpore raises several types for a foreign file
        raise CheckpointError(f"{path} is not a readable MindSpore checkpoint "
                              f"({short_reason(err)})") from None
    # Metadata: strings, and numbers saved through append_dict (scalar entries without a dot).
    meta = {k: data.pop(k) for k in list(data) if not isinstance(data[k], ms.Parameter)}
    meta.update({k: data.pop(k).asnumpy().item() for k in list(data)
                 if "." not in k and tuple(data[k].shape) == ()})
    meta["optimizer"] = {k: data.pop(k) for k in list(data) if k.startswith(OPTIMIZER_PREFIX)}
    meta["ema"] = {k: data.pop(k) for k in list(data) if k.startswith(EMA_PREFIX)}
    if use_ema and meta["ema"]:
        for name, value in meta["ema"].items():
            plain = name[len(EMA_PREFIX):]
            if plain in data:
                data[plain] = ms.Parameter(ms.Tensor(value.asnumpy()), name=plain)
        meta["weights"] = "ema"
    return data, meta


def checkpoint_tasks(meta: dict) -> Optional[list]:
    return meta["ipt_tasks"].split(",") if meta.get("ipt_tasks") else None


def load_params_strict(net: nn.Cell, params: Dict[str, ms.Parameter], source: str) -> None:
    """Load every parameter of `net` from `params`, or fail naming the first difference."""
    own = {p.name: p for p in net.get_parameters()}
    missing = [n for n in own if n not in params]
    unexpected = [n for n in params if n not in own]
    if missing:
        raise CheckpointError(f"{source} lacks {len(missing)} of the model's parameters, first "
                              f"'{missing[0]}' (wrong config or task?)")
    if unexpected:
        raise CheckpointError(f"{source} has {len(unexpected)} parameters the model lacks, first "
                              f"'{unexpected[0]}' (wrong config or task?)")
    for name, param in own.items():
        shape = tuple(params[name].shape)
        if shape != tuple(param.shape):
            raise CheckpointError(f"{source}: '{name}' has shape {shape}, the model expects "
                                  f"{tuple(param.shape)} (wrong config?)")
    params = {name: _as_dtype(params[name], own[name].dtype) for name in own}
    not_loaded, _ = ms.load_param_into_net(net, params, strict_load=True)
    if not_loaded:
        raise CheckpointError(f"{source}: '{not_loaded[0]}' was not loaded")


def _as_dtype(param: ms.Parameter, dtype) -> ms.Parameter:
    """Widen stored values to the model's dtype (shipped weights are kept in float16 to stay small)."""
    if param.dtype == dtype:
        return param
    return ms.Parameter(ms.Tensor(param.asnumpy(), dtype), name=param.name, requires_grad=param.requires_grad)

