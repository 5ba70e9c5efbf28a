"""The restoration tasks IPT is trained for, each defined once with its scale and degradation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Tuple

PATCH = 48  # the network's only input size: IPT runs on 48x48 tiles (output 48s x 48s)


@dataclass(frozen=True)
class Task:
    """A task: what degrades the clean image, and how the network's output is sized."""

    name: str
    kind: str          # 'sr' | 'denoise' | 'derain'
    scale: int         # output side / input side
    sigma: float = 0.0  # Gaussian noise level on the 0-255 scale (denoise only)

    @property
    def benchmark(self) -> str:
        """The standard test set this task is scored on by default (a folder of ../shared/datasets)."""
        return {"sr": "CSet5", "denoise": "CBSD68", "derain": "Rain100L"}[self.kind]

    @property
    def crop_border(self) -> int:
        """Pixels cut from each border before scoring (IPT protocol: the scale for SR, else 0)."""
        return self.scale if self.kind == "sr" else 0


SR_X2 = Task("sr_x2", "sr", 2)
SR_X3 = Task("sr_x3", "sr", 3)
SR_X4 = Task("sr_x4", "sr", 4)
DERAIN = Task("derain", "derain", 1)
DENOISE_30 = Task("denoise_30", "denoise", 1, 30.0)
DENOISE_50 = Task("denoise_50", "denoise", 1, 50.0)

TASKS = {t.name: t for t in (SR_X2, SR_X3, SR_X4, DERAIN, DENOISE_30, DENOISE_50)}

# Slot order of the official six-task pre-training checkpoint (IPT_pretrain.pt): scales 2,3,4,1,1,1.
PRETRAIN_ORDER: Tuple[str, ...] = ("sr_x2", "sr_x3", "sr_x4", "derain", "denoise_30", "denoise_50")


def get_task(name: str) -> Task:
    """Look a task up by name, with a one-line error listing the valid names."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task '{name}'; choose one of: {', '.join(TASKS)}") from None


def get_tasks(names: Iterable[str]) -> Tuple[Task, ...]:
    tasks = tuple(get_task(n) for n in names)
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"task list repeats a task: {[t.name for t in tasks]}")
    if not tasks:
        raise ValueError("the task list is empty")
    return tasks
