"""The training run: data, steps, logs, validation, EMA and checkpoints, in one loop.

`fit(cfg)` is what train.py calls. The step itself (gradients, update) is `Trainer` in
src/trainer.py; this module decides when to log, validate and save, and keeps the run folder:

    out_dir/<checkpoint_name(N)>   rolling checkpoints (weights, Adam state, EMA, best-so-far, ...)
    out_dir/<best_checkpoint_name(task)>  the best validated weights per task (the EMA when it is on)
    out_dir/metrics.jsonl          one JSON object per logged step and per validated task
    out_dir/train.log              the text log, for people

(the names come from src/weights.py). Everything a resumed run needs is in the rolling
checkpoint, so `--resume true` continues the EMA, the best-so-far and the metrics file exactly.
"""
from __future__ import annotations

import json
import logging
import logging.handlers
import math
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from src.checkpoint import save_checkpoint
from src.config import Config
from src.ipt import IPT
from src.parallel import init_parallel, ranks_disagree
from src.trainer import RANK_LOG, Trainer, TrainError, check_train_config, build_run, lr_at, weights_digest
from src.utils import fmt_seconds, publish
from src.weights import best_checkpoint_name, checkpoint_name, prune_checkpoints

LOG = logging.getLogger(__name__)
METRICS_FILE = "metrics.jsonl"


class RunLog:
    """Rank 0's copy of the log in out_dir/train.log (appended on resume).

    Records are buffered until `attach`: in a data-parallel run rank 0 must not write into out_dir
    before every rank has checked that it may use it (the first step's collectives guarantee that).
    """

    def __init__(self, enabled: bool) -> None:
        self.buffer = logging.handlers.MemoryHandler(capacity=1 << 20, flushLevel=logging.CRITICAL + 1) \
            if enabled else None
        self.file: Optional[logging.Handler] = None
        if self.buffer is not None:
            logging.getLogger().addHandler(self.buffer)

    def attach(self, out_dir: Path) -> None:
        if self.buffer is None or self.file is not None:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        self.file = logging.FileHandler(out_dir / "train.log", mode="a")
        self.file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        self.buffer.setTarget(self.file)
        self.buffer.flush()
        logging.getLogger().removeHandler(self.buffer)
        logging.getLogger().addHandler(self.file)

    def close(self) -> None:
        for handler in (self.buffer, self.file):
            if handler is not None:
                logging.getLogger().removeHandler(handler)
                handler.close()


class MetricsLog:
    """out_dir/metrics.jsonl: machine-readable records, one JSON object per line (rank 0 only).

    On resume from step k the records after k (written by the interrupted run, and about to be
    redone) are dropped first, so the file reads as one uninterrupted run.
    """

    def __init__(self, path: Path, enabled: bool, start_step: int) -> None:
        self.path, self.enabled = path, enabled
        self.fh = None
        self.start_step = start_step

    def _open(self) -> None:
        kept = []
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= self.start_step:
                        kept.append(line)
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a kill
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(k + "\n" for k in kept))
            publish(tmp, self.path)
        self.fh = open(self.path, "a")

    def write(self, record: dict) -> None:
        """Append one record; the first call (after the first step: out_dir checked on every rank)
        opens the file and drops the records a resumed run redoes."""
        if not self.enabled:
            return
        if self.fh is None:
            self._open()
        self.fh.write(json.dumps(record, sort_keys=True) + "\n")
        self.fh.flush()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


def read_metrics(out_dir) -> List[dict]:
    """The records of a run's metrics.jsonl (the reader of scripts/plot_losses.py and the benches)."""
    path = Path(out_dir) / METRICS_FILE
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def fit(cfg) -> dict:
    """Train as configured (see default_config.yaml, training section); returns a summary dict."""
    check_train_config(cfg)
    rank, world = init_parallel(cfg)
    if rank != 0:  # only rank 0 reports progress
        logging.getLogger().setLevel(logging.WARNING)
        RANK_LOG.setLevel(logging.INFO)
    run_log = RunLog(enabled=rank == 0)
    try:
        mcfg, model, trainer, start, meta = build_run(cfg, rank, world)
        if world == 1:
            run_log.attach(Path(cfg.out_dir))
        return _train(cfg, mcfg, model, trainer, start, meta, rank, world, run_log)
    finally:
        run_log.close()


def _training_data(cfg, model: IPT, trainer: Trainer, rank: int, world: int, start: int):
    from src.dataset import build_train_source, create_train_dataset
    # --accumulate K: each step draws K x batch_size samples (one task), split into K micro-batches
    data_cfg = Config(cfg, batch_size=cfg.batch_size * trainer.accumulate) if trainer.accumulate > 1 else cfg
    try:
        source = build_train_source(data_cfg, model.task_names, rank=rank, world_size=world, start_step=start)
        dataset = create_train_dataset(data_cfg, model.task_names, rank=rank, world_size=world, start_step=start,
                                       source=source)
    except (ValueError, OSError) as err:
        raise TrainError(f"training data: {err}") from None
    bad = ranks_disagree(source.data_digest, world)
    if bad:
        raise TrainError(f"rank {bad[0]} sees different training data than rank 0 (its --train_path "
                         f"holds other images or sizes): give every node the same copy of the corpus")
    return dataset


def _save_best(mcfg: Config, model: IPT, trainer: Trainer, best: Dict[str, dict], val: Dict[str, dict],
               step: int, out_dir: Path) -> None:
    """Write best_{task}.ckpt for every task whose validation PSNR beat its best so far."""
    for name, scores in val.items():
        if name in best and scores["psnr"] <= best[name]["psnr"]:
            continue
        best[name] = {"psnr": scores["psnr"], "ssim": scores["ssim"], "step": step}
        params = trainer.ema.averaged_params(model) if trainer.ema is not None else model
        save_checkpoint(params, out_dir / best_checkpoint_name(name), mcfg, tasks=model.task_names,
                        extra={"step": str(step), "val_task": name, "val_psnr": repr(scores["psnr"]),
                               "weights": "ema" if trainer.ema is not None else "model"})
        LOG.info("new best %s: %.3f dB at step %d -> %s", name, scores["psnr"], step, best_checkpoint_name(name))


def _validate(validator, model: IPT, trainer: Trainer) -> Dict[str, dict]:
    if trainer.ema is not None:
        with trainer.ema.swapped_in():
            return validator.run(model)
    return validator.run(model)


def _train(cfg, mcfg: Config, model: IPT, trainer: Trainer, start: int, meta: dict, rank: int, world: int,
           run_log: RunLog) -> dict:
    from src.validation import Validator

    steps = cfg.steps
    end = steps if not cfg.stop_after else min(steps, start + cfg.stop_after)
    if start >= steps:
        LOG.info("nothing to do: the run already reached step %d of %d", start, steps)
        return {"step": start, "digest": weights_digest(model), "rank": rank, "losses": []}
    dataset = _training_data(cfg, model, trainer, rank, world, start)
    try:
        validator = Validator(cfg, model.tasks) if rank == 0 else None
    except (ValueError, OSError) as err:
        raise TrainError(str(err)) from None
    LOG.info("%s: %s, tasks %s, %d params, global batch %d on %d rank(s), steps %d..%d of %d, out_dir %s",
             cfg.train_mode, cfg.config_path, ",".join(model.task_names), model.num_parameters(),
             cfg.batch_size, world, start, end, steps, cfg.out_dir)

    out_dir = Path(cfg.out_dir)
    metrics = MetricsLog(out_dir / METRICS_FILE, rank == 0, start)
    best: Dict[str, dict] = json.loads(meta.get("best", "{}")) if meta else {}
    log_every, save_every = max(cfg.log_every, 1), cfg.save_every
    val_every = cfg.val_every or save_every
    losses: List[Tuple[int, str, float, float, float]] = []
    window_start, window_steps = time.perf_counter(), 0
    step = start
    try:
        for lr_batch, hr_batch, slot in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True):
            if step >= end:
                break
            slot, task = int(slot), model.task_names[int(slot)]
            lr_value = lr_at(step, cfg)
            compiled = len(trainer.compile_seconds)
            loss, l1, con = trainer.train_step(slot, lr_batch, hr_batch, lr_value)
            if len(trainer.compile_seconds) > compiled:
                LOG.info("compiled the %s train step (first call %.1f s)", task, trainer.compile_seconds[task])
            if not math.isfinite(loss) and not trainer.last_skipped:
                raise TrainError(f"loss is {loss} at step {step + 1} (task {task}): lower lr_max/lr_min or "
                                 f"set grad_clip")
            step += 1
            window_steps += 1
            losses.append((step, task, loss, l1, con))
            run_log.attach(out_dir)  # every rank has passed its out_dir check once a step is done
            if step % log_every == 0 or step == end:
                now = time.perf_counter()
                rate = window_steps * cfg.batch_size * trainer.accumulate / max(now - window_start, 1e-9)
                eta = (end - step) * (now - window_start) / max(window_steps, 1)
                LOG.info("step %d/%d task %s loss %.4f (l1 %.4f contrastive %.4f) lr %.3g %.1f samples/s ETA %s%s",
                         step, steps, task, loss, l1, con, lr_value, rate, fmt_seconds(eta),
                         "" if trainer.scaling.mode == "static" else
                         f" loss scale {trainer.loss_scale:g} overflows {trainer.overflows}")
                metrics.write({"kind": "train", "step": step, "task": task, "loss": loss, "l1": l1,
                               "contrastive": con, "lr": lr_value, "loss_scale": trainer.loss_scale,
                               "overflows": trainer.overflows, "skipped": trainer.last_skipped,
                               "samples_per_s": rate})
                window_start, window_steps = time.perf_counter(), 0
            if validator and (step % val_every == 0 or step == end):
                val = _validate(validator, model, trainer)
                for name, scores in val.items():
                    LOG.info("validation step %d %s: PSNR %.3f dB SSIM %.4f (%d images, %.1f s)", step, name,
                             scores["psnr"], scores["ssim"], scores["images"], scores["seconds"])
                    metrics.write({"kind": "val", "step": step, "task": name, "val_psnr": scores["psnr"],
                                   "val_ssim": scores["ssim"], "val_psnr_rgb": scores["psnr_rgb"],
                                   "images": scores["images"], "weights": "ema" if trainer.ema else "model"})
                _save_best(mcfg, model, trainer, best, val, step, out_dir)
            if rank == 0 and ((save_every > 0 and step % save_every == 0) or step == end):
                extra = trainer.checkpoint_extra(step, lr_value)
                extra["best"] = json.dumps(best, sort_keys=True)
                path = save_checkpoint(model, out_dir / checkpoint_name(step), mcfg, extra=extra)
                prune_checkpoints(out_dir, cfg.keep_last)
                LOG.info("saved %s", path)
    finally:
        metrics.close()
    digest = weights_digest(model)
    RANK_LOG.info("rank %d finished at step %d, weights digest %s", rank, step, digest)
    return {"step": step, "digest": digest, "rank": rank, "losses": losses, "best": best,
            "compile_seconds": dict(trainer.compile_seconds)}


__all__ = ["fit", "RunLog", "MetricsLog", "read_metrics", "METRICS_FILE"]
