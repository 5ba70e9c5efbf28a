"""Official PyTorch IPT state dicts -> this project's parameters.

Our parameter names equal the official keys, so conversion is mostly a check: is this an IPT state
dict, which task is in which slot, do the shapes fit the config. The official files are
IPT_sr2/sr3/sr4/dn30/dn50/derain (one task in slot 0, one query) and IPT_pretrain (six slots in the
order of `src.tasks.PRETRAIN_ORDER`). Dropped on the way: the `position_ids` buffer (always
0..255), and an all-zero `out_proj.bias` that torch 1.6-1.8 adds to every attention.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from src.slots import QUERY_NAME, count_slots, slot_key, take_slots
from src.tasks import PRETRAIN_ORDER, get_task


class ConversionError(ValueError):
    """A file that is not an official IPT state dict, or that does not fit the chosen config."""


def file_slots(state: Dict[str, np.ndarray]) -> int:
    """How many task slots (heads) the state dict holds."""
    return count_slots(state)


def tail_scale(state: Dict[str, np.ndarray], slot: int, n_feats: int) -> int:
    """The upscaling factor of a tail, read from its convolution shapes."""
    first = state.get(slot_key("tail", slot, "0.0.weight"))
    if first is None:
        return 1
    if first.shape[0] == 9 * n_feats:
        return 3
    return 4 if slot_key("tail", slot, "0.2.weight") in state else 2


def source_slots(state: Dict[str, np.ndarray], tasks: Sequence[str], task: Optional[str]) -> List[int]:
    """For each of the model's tasks, the slot of the file that holds it."""
    n = file_slots(state)
    if n == len(PRETRAIN_ORDER):
        return [PRETRAIN_ORDER.index(t) for t in tasks]
    if n == 1:
        name = task or (tasks[0] if len(tasks) == 1 else None)
        if name is None:
            raise ConversionError("the file holds one task: say which with --task")
        if list(tasks) != [name]:
            raise ConversionError(f"the file holds one task ({name}) but the model is built for "
                                  f"{','.join(tasks)}")
        return [0]
    raise ConversionError(f"the file has {n} task heads; expected 1 (IPT_sr2, ...) or 6 (IPT_pretrain)")


def convert_state_dict(state: Dict[str, np.ndarray], expected: Dict[str, tuple], tasks: Sequence[str],
                       task: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Map an official state dict onto a model whose parameters have names/shapes `expected`."""
    for key in ("head.0.0.weight", "tail.0.1.weight", "sub_mean.weight"):
        if key not in state:
            raise ConversionError(f"not an IPT state dict: no key '{key}'")
    slots = source_slots(state, tasks, task)
    n_feats = state["head.0.0.weight"].shape[0]
    for ours, src in enumerate(slots):
        found, wanted = tail_scale(state, src, n_feats), get_task(tasks[ours]).scale
        if found != wanted:
            raise ConversionError(f"the file's task slot {src} upscales x{found}, but {tasks[ours]} "
                                  f"needs x{wanted}")
    kept: Dict[str, np.ndarray] = {}
    for key, value in state.items():
        if key == "body.position_encoding.position_ids":
            continue
        if key.endswith("out_proj.bias") and key not in expected:
            if np.any(value):
                raise ConversionError(f"'{key}' is non-zero: convert with --out_proj_bias true")
            continue
        kept[key] = value
    out = take_slots(kept, slots, expected.get(QUERY_NAME, (0,))[0])
    for key, shape in expected.items():
        if key not in out:
            raise ConversionError(f"the file lacks '{key}' (wrong config, e.g. num_layers?)")
        if tuple(out[key].shape) != tuple(shape):
            raise ConversionError(f"'{key}' has shape {tuple(out[key].shape)} in the file, the config "
                                  f"expects {tuple(shape)}")
    extra = [k for k in out if k not in expected]
    if extra:
        raise ConversionError(f"the file has '{extra[0]}' which the config lacks (wrong config?)")
    return {k: np.ascontiguousarray(out[k], dtype=np.float32) for k in expected}
