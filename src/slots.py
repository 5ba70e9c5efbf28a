"""Task slots in parameter names: the one place that knows which parameters belong to task k.

An IPT model holds its tasks in slots 0..n-1: slot k owns `head.k.*` and `tail.k.*` and row k of
the query table `body.query_embed.weight` (a model built with one query shares row 0); everything
else is shared by every task. The trainer (what a step of task k updates), fine-tuning (slot k of
a multi-task file into a one-task model), export (one task's row of the query table) and the
converter (official files, plain dicts of numpy arrays without a model) all ask here, so the
naming rule is written once. Pure Python and numpy: no MindSpore import.
"""
from __future__ import annotations

import re
from typing import Dict, Mapping, Optional, Sequence, Tuple, TypeVar

import numpy as np

QUERY_NAME = "body.query_embed.weight"  # the task query table: one row per slot (or one shared row)
_SLOT_NAME = re.compile(r"^(head|tail)\.(\d+)\.(.*)$")

V = TypeVar("V")


def split_slot_name(name: str) -> Optional[Tuple[str, int, str]]:
    """('head' | 'tail', slot, rest of the name) for a slot's own parameter, None for a shared one."""
    match = _SLOT_NAME.match(name)
    return (match.group(1), int(match.group(2)), match.group(3)) if match else None


def slot_of(name: str) -> Optional[int]:
    """The slot that owns parameter `name`, or None when every task uses it (body, mean shifts)."""
    parts = split_slot_name(name)
    return parts[1] if parts else None


def slot_key(part: str, slot: int, rest: str) -> str:
    """The name of a slot's parameter, e.g. slot_key('tail', 2, '0.0.weight') -> 'tail.2.0.0.weight'."""
    return f"{part}.{slot}.{rest}"


def count_slots(names) -> int:
    """How many task slots (heads) a set of parameter names holds."""
    return len({parts[1] for parts in map(split_slot_name, names) if parts and parts[0] == "head"})


def query_rows(table, slots: Sequence[int], n_queries: int) -> np.ndarray:
    """The query table a model with `n_queries` rows needs when its slot i is the file's `slots[i]`.

    A table with one row (a one-query model) is shared by every slot, so its first row is kept.
    """
    table = np.asarray(table.asnumpy() if hasattr(table, "asnumpy") else table)
    if n_queries == len(slots) and table.shape[0] > 1:
        return table[list(slots)]
    return table[:n_queries]


def take_slots(params: Mapping[str, V], slots: Sequence[int], n_queries: int) -> Dict[str, V]:
    """The parameters of a model whose slot i is slot `slots[i]` of `params`.

    Shared parameters are kept, the chosen slots' heads and tails renamed, other slots dropped, and
    the query table (if any) cut to the chosen rows (`query_rows`, a numpy array).
    """
    out: Dict[str, V] = {}
    for name, value in params.items():
        parts = split_slot_name(name)
        if parts is not None:
            part, slot, rest = parts
            if slot in slots:
                out[slot_key(part, list(slots).index(slot), rest)] = value
            continue
        out[name] = query_rows(value, slots, n_queries) if name == QUERY_NAME else value
    return out
