"""Validation during training: eval.py's protocol on a few images per task, every N steps.

``--val_path`` names the images: ``default`` (each task's standard benchmark, e.g. CSet5 for SR),
one folder for every task, or ``task=DIR,task=DIR`` per task. A folder of clean images serves
every task: SR and denoising degrade it as their benchmarks do, derain adds the training's
synthetic rain seeded per image (``SyntheticRainBenchmark``); a paired folder (src/pairs.py)
serves derain with its own rainy inputs. ``--val_limit N`` keeps the
first N images of each. Images are restored with the model being trained, through the same tiler
and scoring code as eval.py (src/evaluation.py), so a validation PSNR is an eval.py PSNR.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from src.benchmarks import BenchmarkItem, open_benchmark
from src.evaluation import means, score_all
from src.pairs import has_pair_layout
from src.tasks import Task
from src.config import DATASETS_ROOT

LOG = logging.getLogger(__name__)


def parse_val_path(value: str, tasks: Sequence[Task]) -> Dict[str, Path]:
    """task name -> folder, for the tasks that ``--val_path`` serves (see the module docstring)."""
    if not value:
        return {}
    names = {t.name: t for t in tasks}
    if "=" in value:
        out = {}
        for part in value.split(","):
            name, _, folder = part.partition("=")
            name = name.strip()
            if name not in names:
                raise ValueError(f"--val_path names task '{name}', not one of {', '.join(names)}")
            out[name] = Path(folder.strip())
        return out
    if value == "default":
        return {t.name: DATASETS_ROOT / t.benchmark for t in tasks}
    return {t.name: Path(value) for t in tasks}


class Validator:
    """The validation images of each task, loaded once; ``run`` scores a model on all of them."""

    def __init__(self, cfg, tasks: Sequence[Task]) -> None:
        self.cfg = cfg
        self.sets: Dict[str, Tuple[Task, List[BenchmarkItem], Path]] = {}
        for name, folder in parse_val_path(cfg.val_path or "", tasks).items():
            task = next(t for t in tasks if t.name == name)
            if not folder.is_dir():
                raise ValueError(f"--val_path folder for {name} not found: {folder}")
            synthetic_rain = task.kind == "derain" and not has_pair_layout(folder)
            bench = open_benchmark(folder, task.kind, task.scale, task.sigma, seed=cfg.noise_seed,
                                   synthetic_rain=synthetic_rain)
            items = []
            for item in bench:
                items.append(item)
                if cfg.val_limit and len(items) >= cfg.val_limit:
                    break
            if not items:
                raise ValueError(f"--val_path {folder} holds no {name} images")
            self.sets[name] = (task, items, folder)
            if synthetic_rain:
                LOG.info("validation: %s has no rainy/clean pairs; derain is validated on its images "
                         "with synthetic rain", folder)
        skipped = [t.name for t in tasks if t.name not in self.sets]
        if self.sets:
            LOG.info("validation: %s%s", ", ".join(f"{n} on {len(v[1])} image(s) of {v[2]}" for n, v in self.sets.items()),
                     f" (no validation images for {', '.join(skipped)})" if skipped else "")

    def __bool__(self) -> bool:
        return bool(self.sets)

    def run(self, model) -> Dict[str, Dict[str, float]]:
        """{task: {psnr, ssim, psnr_y, ..., images, seconds}} for the model's current weights."""
        from src.inference import CellRunner, make_tiler
        results = {}
        for name, (task, items, _) in self.sets.items():
            start = time.perf_counter()
            was_training = model.training
            model.set_train(False)
            try:
                tiler = make_tiler(self.cfg, task, CellRunner(model.task_net(name)))
                rows = score_all(items, task, tiler, self.cfg.metric)
            finally:
                model.set_train(was_training)
            results[name] = {**means(rows), "images": len(rows), "seconds": time.perf_counter() - start}
        return results


__all__ = ["Validator", "parse_val_path"]
