"""Weight files: which checkpoint a command uses, and how one is loaded into a model.

`src/checkpoint.py` is the .ckpt format (atomic save with the model's description, strict parameter
load). This module owns everything above it, once:

* the shipped weights (`pretrained/ipt_tiny_TASK.ckpt`, else the six-task `ipt_tiny_pretrain.ckpt`)
  and the resolution of `--ckpt`;
* loading: a checkpoint into a model built for it (model options and tasks checked by name), a
  task's inference cell for a checkpoint, one task of a multi-task file into a one-task model
  for fine-tuning, and another task's weights as the warm start of a one-task model;
* a training run's checkpoints: the file name `ipt_stepNNNNNNNN.ckpt`, listing, pruning, unfinished
  writes of a killed save.

MindSpore is imported only by the loaders, so start-up checks, bench scripts and shell scripts
(`python -c "from src.weights import checkpoint_name"`) use the rest without its 3 s import.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, List, Optional, Tuple, Union

from src.config import REPO_ROOT, Config
from src.slots import split_slot_name, take_slots
from src.tasks import Task

if TYPE_CHECKING:  # annotations only: importing these loads MindSpore
    from mindspore.nn import Cell
    from src.ipt import IPT, TaskNet

PathLike = Union[str, Path]

LOG = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- shipped weights
PRETRAINED_DIR = REPO_ROOT / "pretrained"
SHIPPED_PREFIX = "ipt_tiny_"
PRETRAIN_SHIPPED = "pretrain"  # the six-task file's name part: ipt_tiny_pretrain.ckpt


def shipped_name(name: str) -> str:
    """File name of shipped weights: a task name, or `PRETRAIN_SHIPPED` for the six-task file."""
    return f"{SHIPPED_PREFIX}{name}.ckpt"


def default_checkpoint(task: Task, folder: PathLike = PRETRAINED_DIR) -> Optional[Path]:
    """The shipped weights for a task in `folder`, if any: its own fine-tuned file, else the
    six-task pre-trained one (what eval.py, restore.py and export.py use without --ckpt)."""
    for name in (shipped_name(task.name), shipped_name(PRETRAIN_SHIPPED)):
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def resolve_checkpoint(cfg: Config, task: Task) -> Path:
    """--ckpt, or the shipped weights for the task; a one-line CheckpointError if there are none."""
    if cfg.ckpt:
        path = Path(cfg.ckpt)
        if not path.is_file():
            from src.checkpoint import CheckpointError
            raise CheckpointError(f"checkpoint not found: {path}")
        return path
    path = default_checkpoint(task)
    if path is None:
        from src.checkpoint import CheckpointError
        raise CheckpointError(f"no --ckpt given and no shipped weights for {task.name} in {PRETRAINED_DIR.name}/")
    LOG.info("no --ckpt given: using the shipped weights %s", path.relative_to(REPO_ROOT))
    return path


# ----------------------------------------------------------------------------- run checkpoints
CKPT_PREFIX = "ipt_step"
CKPT_DIGITS = 8
CKPT_PATTERN = re.compile(rf"^{CKPT_PREFIX}(\d{{{CKPT_DIGITS}}})\.ckpt$")


def best_checkpoint_name(task: str) -> str:
    """The best validated weights of a task in a run folder (never pruned)."""
    return f"best_{task}.ckpt"


def checkpoint_name(step: int) -> str:
    """The file name train.py gives the checkpoint of `step` (sortable: zero-padded)."""
    return f"{CKPT_PREFIX}{int(step):0{CKPT_DIGITS}d}.ckpt"


def list_checkpoints(out_dir: PathLike) -> List[Tuple[int, Path]]:
    """(step, path) of a run's checkpoints in out_dir, oldest first."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in out_dir.iterdir() if (m := CKPT_PATTERN.match(p.name)))


def prune_checkpoints(out_dir: PathLike, keep_last: int) -> List[Path]:
    """Delete all but the newest `keep_last` checkpoints (0 keeps all); returns what was deleted."""
    if keep_last <= 0:
        return []
    old = [path for _, path in list_checkpoints(out_dir)[:-keep_last]]
    for path in old:
        path.unlink()
    return old


def unfinished_checkpoints(out_dir: PathLike) -> List[Path]:
    """Temporary files of checkpoint saves that were killed mid-write (save_checkpoint's
    `.NAME.tmpPID.ckpt`); they are never listed as checkpoints."""
    out_dir = Path(out_dir)
    return sorted(out_dir.glob(f".{CKPT_PREFIX}*.tmp*")) if out_dir.is_dir() else []


# ----------------------------------------------------------------------------- loading
def check_options(cfg: Config, meta: dict, path: PathLike, ignore: Iterable[str] = ()) -> None:
    """Fail with the first model option that differs between the config and the checkpoint.

    `ignore`: options allowed to differ (fine-tuning takes one task's query row, so num_queries).
    """
    from src.checkpoint import MODEL_KEYS, CheckpointError, model_options
    if not meta.get("ipt_model"):
        return
    saved, wanted = json.loads(meta["ipt_model"]), model_options(cfg)
    for key in MODEL_KEYS:
        if key not in ignore and key in saved and saved[key] != wanted[key]:
            raise CheckpointError(f"{path} was made with {key}={saved[key]} but the config has "
                                  f"{key}={wanted[key]} (pass the matching --config)")


def load_checkpoint(net: "Cell", path: PathLike, cfg: Optional[Config] = None) -> dict:
    """Strictly load a .ckpt into `net` (options checked against `cfg` when given, tasks against
    the model's); returns the file's metadata (step, tasks, optimizer state, ...)."""
    from src.checkpoint import CheckpointError, checkpoint_tasks, load_params_strict, read_checkpoint
    params, meta = read_checkpoint(path)
    if cfg is not None:
        check_options(cfg, meta, path)
    saved_tasks = checkpoint_tasks(meta)
    own_tasks = getattr(net, "task_names", None)
    if saved_tasks and own_tasks and tuple(saved_tasks) != tuple(own_tasks):
        raise CheckpointError(f"{path} holds tasks {','.join(saved_tasks)}, the model was built for "
                              f"{','.join(own_tasks)}")
    load_params_strict(net, params, str(path))
    LOG.info("loaded %s (tasks: %s)", path, ",".join(saved_tasks or own_tasks or ["?"]))
    return meta


def load_task_model(cfg: Config, task: Task, path: PathLike) -> "TaskNet":
    """Build IPT to fit a checkpoint's tasks, load it strictly, return the task's inference cell
    (at the config's precision: `amp_level`, `compute_dtype`; its outputs are float32 always).

    The model options are the config's when it names them (`--config`, `--key value`), else the
    checkpoint's own, so `--ckpt` alone runs any of this project's checkpoints.
    """
    from src.checkpoint import CheckpointError, checkpoint_tasks, load_params_strict, read_checkpoint
    from src.ipt import IPT
    params, meta = read_checkpoint(path, use_ema=True)
    if meta.get("weights") == "ema":
        LOG.info("%s: using its moving average of the weights (trained with --ema_decay)", Path(path).name)
    tasks = checkpoint_tasks(meta) or list(cfg.tasks)
    if task.name not in tasks:
        raise CheckpointError(f"{path} holds tasks {','.join(tasks)}, not {task.name}")
    cfg = Config(cfg, tasks=tasks)
    if meta.get("ipt_model") is None and cfg.num_queries and cfg.num_queries != len(tasks):
        cfg.num_queries = None
    saved = json.loads(meta["ipt_model"]) if meta.get("ipt_model") else {}
    if saved and cfg.get("config_path") is None and not set(cfg.get("overridden", ())) & set(saved):
        cfg.update(saved)  # no model options given: take the checkpoint's own
        LOG.info("model options from %s: %s", Path(path).name,
                 " ".join(f"{k}={saved[k]}" for k in ("n_feats", "num_heads", "num_layers") if k in saved))
    check_options(cfg, meta, path)
    model = IPT(cfg)
    load_params_strict(model, params, str(path))
    model.set_train(False)
    # float32 weights run at any --amp_level / --compute_dtype (src/precision.py); O0 = float32
    from src.precision import apply_precision
    apply_precision(model, cfg.get("amp_level", "O0"), cfg.get("compute_dtype", "float16"))
    return model.task_net(task.name)


def _task_slot(path: PathLike, cfg: Config, pick) -> Tuple[dict, str, List[str]]:
    """One task's parameters of a (multi-task) checkpoint, renamed to a one-task model's slot 0:
    (parameters, the task `pick(tasks)` chose, the file's tasks). Model options are checked."""
    from src.checkpoint import checkpoint_tasks, read_checkpoint
    params, meta = read_checkpoint(path, use_ema=True)
    tasks = checkpoint_tasks(meta)
    source = pick(tasks)
    check_options(cfg, meta, path, ignore=("num_queries",))
    return take_slots(params, [tasks.index(source)], n_queries=1), source, tasks


def load_pretrained_task(model: "IPT", path: PathLike, cfg: Config) -> None:
    """Fill a one-task model from a (multi-task) checkpoint: the shared body plus that task's head,
    tail and query row. One-line CheckpointError if the file lacks the task or does not fit."""
    import mindspore as ms
    from src.checkpoint import CheckpointError, load_params_strict
    task = model.task_names[0]

    def pick(tasks: List[str]) -> str:
        if not tasks:
            raise CheckpointError(f"{path} has no task list (ipt_tasks) in its metadata")
        if task not in tasks:
            raise CheckpointError(f"{path} has no '{task}' task (it has: {', '.join(tasks)})")
        return task

    params, _, tasks = _task_slot(path, cfg, pick)
    mapped = {name: value if isinstance(value, ms.Parameter) else ms.Parameter(ms.Tensor(value), name=name)
              for name, value in params.items()}
    load_params_strict(model, mapped, str(path))
    LOG.info("fine-tuning %s from %s (slot %d of %s)", task, path, tasks.index(task), ",".join(tasks))


def load_warm_start(model: "IPT", path: PathLike, cfg: Config) -> Tuple[int, int]:
    """Start a one-task model from another task's weights (EDSR's x2 -> x3/x4 warm start): the body,
    head and query row of the checkpoint's task, and every tail layer whose name and shape match;
    the rest keeps its random initialisation. The file holds this task (its slot is taken) or one
    task. Returns (parameters loaded, parameters left random); one-line CheckpointError otherwise."""
    import mindspore as ms
    from src.checkpoint import CheckpointError
    task = model.task_names[0]

    def pick(tasks: List[str]) -> str:
        if task in tasks:
            return task
        if len(tasks) == 1:
            return tasks[0]
        raise CheckpointError(f"{path} holds tasks {', '.join(tasks) or '(none)'}: --init_from takes a "
                              f"one-task checkpoint or one with '{task}'")

    theirs, source, _ = _task_slot(path, cfg, pick)
    own = {p.name: p for p in model.get_parameters()}
    fits = {name: value for name, value in theirs.items()
            if name in own and tuple(value.shape) == tuple(own[name].shape)}
    unfit = sorted(name for name in own if name not in fits)
    outside_tail = [name for name in unfit if (split_slot_name(name) or ("",))[0] != "tail"]
    if outside_tail:
        raise CheckpointError(f"{path} ({source}) does not fit the {task} model outside its tail, "
                              f"first at '{outside_tail[0]}'")
    for name, value in fits.items():
        data = value.asnumpy() if isinstance(value, ms.Tensor) else value
        own[name].set_data(ms.Tensor(data, own[name].dtype))
    LOG.info("warm start of %s from %s (%s): %d parameters loaded, %d left random (%s)", task, path, source,
             len(fits), len(unfit), ", ".join(unfit) or "none")
    return len(fits), len(unfit)
