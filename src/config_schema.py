"""Every configuration key, declared once: its type, its allowed values and what it is for.

`src/config.py` checks a whole config against this table when a command starts, before MindSpore
or a model is loaded, so a bad value is one line naming the key, the value and what is allowed,
and the code that reads a key can trust its type (no casts at the use sites).
tests/test_config.py fails if default_config.yaml has a key not declared here or the reverse, or if
code reads a key that is not declared.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

from src.tasks import PATCH, TASKS
from src.tiling import DEFAULT_OVERLAP, MODES


@dataclass(frozen=True)
class Option:
    """One key: kind is bool | int | float | str | task | tasks | pair; bounds are inclusive unless open."""

    kind: str
    help: str
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False        # low < value rather than low <= value
    high_open: bool = False
    choices: Optional[Tuple[Any, ...]] = None
    nullable: bool = False        # null (None) allowed
    upper: bool = False           # str choices compared and stored upper-case

    def allowed(self) -> str:
        """What is allowed, in words, for the error message."""
        if self.choices is not None:
            names = [str(c) for c in self.choices]
            text = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        elif self.kind == "task":
            text = "one of " + ", ".join(TASKS)
        elif self.kind == "tasks":
            text = "a non-empty list of distinct task names from " + ", ".join(TASKS)
        elif self.kind == "pair":
            text = f"two numbers in [{self.low}, {self.high})"
        else:
            text = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string"}[self.kind]
            if self.low is not None or self.high is not None:
                lo = "" if self.low is None else f"{self.low} {'<' if self.low_open else '<='} "
                hi = "" if self.high is None else f" {'<' if self.high_open else '<='} {self.high}"
                text += f" with {lo}value{hi}"
        return text + (" or null" if self.nullable else "")


def _pos(kind: str, help: str, low: float = 0, open_low: bool = True, **kw) -> Option:
    return Option(kind, help, low=low, low_open=open_low, **kw)


TASK_NAMES = tuple(TASKS)
SCHEMA = {
    # ---- model (official option names)
    "tasks": Option("tasks", "task slots of the model, in order"),
    "n_feats": _pos("int", "head/tail feature channels"),
    "n_colors": Option("int", "image channels (IPT is RGB)", choices=(3,)),
    "rgb_range": _pos("float", "pixel range of inputs and outputs"),
    "patch_size": _pos("int", "the network's input tile (48 in IPT)"),
    "patch_dim": _pos("int", "tokens are patch_dim x patch_dim patches of the feature map"),
    "num_heads": _pos("int", "attention heads"),
    "num_layers": _pos("int", "encoder layers = decoder layers"),
    "num_queries": _pos("int", "task query embeddings; null = one per task", nullable=True),
    "dropout_rate": Option("float", "dropout in the body", low=0, high=1, high_open=True),
    "no_norm": Option("bool", "official --no_norm: no LayerNorm"),
    "no_mlp": Option("bool", "official --no_mlp: no linear encoding, mlp head or query embedding"),
    "pos_every": Option("bool", "official --pos_every: position embedding in every attention"),
    "no_pos": Option("bool", "official --no_pos: no position embedding"),
    "out_proj_bias": Option("bool", "attention out_proj bias (torch 1.6-1.8 checkpoints)"),
    # ---- runtime
    "device_target": Option("str", "where the network runs", choices=("CPU", "GPU", "Ascend")),
    "device_id": Option("int", "device index on GPU/Ascend", low=0),
    "mode": Option("str", "MindSpore execution mode", choices=("GRAPH", "PYNATIVE"), upper=True),
    "threads": Option("int", "CPU kernel threads; 0 = number of cores", low=0, high=1024),
    "seed": Option("int", "random seed of model init, data and noise draws", low=0),
    "log_level": Option("str", "logging level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), upper=True),
    "amp_level": Option("str", "mixed precision level (MindSpore's O0..O3)", choices=("O0", "O1", "O2", "O3"), upper=True),
    "compute_dtype": Option("str", "low dtype of amp_level O1-O3", choices=("float16", "bfloat16")),
    # ---- data
    "data_path": Option("str", "eval: benchmark folder; null = the task's standard benchmark", nullable=True),
    "train_path": Option("str", "training: folder tree of clean images"),
    "data_source": Option("str", "training images: auto | ram | stream", choices=("auto", "ram", "stream")),
    "ram_limit_mb": _pos("int", "data_source auto: largest decoded corpus kept in RAM"),
    "data_index": Option("str", "cached image index of train_path; null = per-machine cache", nullable=True),
    "crops_per_image": Option("int", "samples sharing one decoded image; 0 = auto", low=0, high=1024),
    "rain_streaks": Option("str", "derain: folder of real rain streak maps; null = synthetic", nullable=True),
    "task": Option("task", "the task an eval/restore/export/fine-tune run works on"),
    "ckpt": Option("str", "checkpoint (.ckpt; eval/restore also take .mindir / .onnx); '' = shipped"),
    # ---- inference
    "tiling": Option("str", "fast | exact (the official stride-12 stitching)", choices=MODES),
    "tile_batch": Option("int", "tiles per network call", low=1, high=4096),
    "tile_overlap": Option("int", f"fast mode overlap in pixels; null = measured default ({DEFAULT_OVERLAP})",
                           low=0, high=PATCH, high_open=True, nullable=True),
    "self_ensemble": Option("bool", "average the 8 flips/rotations (8x slower)"),
    "metric": Option("str", "y (IPT protocol) | rgb", choices=("y", "rgb")),
    "noise_seed": Option("int", "base seed of the benchmark noise", low=0),
    "max_megapixels": _pos("float", "refuse input images larger than this (memory and time guard)"),
    "save_dir": Option("str", "eval: also write the restored images here"),
    "json": Option("str", "eval: write the results (and each row as it comes) to this file"),
    "baseline": Option("bool", "eval: score the degraded input itself"),
    "input": Option("str", "restore: an image file, a folder or a glob"),
    "output": Option("str", "restore: the output folder"),
    "overwrite": Option("bool", "replace existing outputs"),
    "out_format": Option("str", "restore: output file type; same = the input's",
                         choices=("png", "jpg", "bmp", "tiff", "webp", "same")),
    # ---- training
    "train_mode": Option("str", "pretrain (all tasks) | finetune (one task)", choices=("pretrain", "finetune")),
    "batch_size": Option("int", "global batch size", low=1),
    "steps": Option("int", "optimizer steps of the whole run", low=1),
    "lr_max": _pos("float", "peak learning rate (cosine start)"),
    "lr_min": Option("float", "final learning rate (cosine end; constant schedule's rate)", low=0),
    "lr_schedule": Option("str", "cosine: lr_max -> lr_min; constant: lr_min", choices=("cosine", "constant")),
    "betas": Option("pair", "Adam betas", low=0, high=1),
    "eps": _pos("float", "Adam epsilon"),
    "weight_decay": Option("float", "L2 weight decay", low=0),
    "grad_clip": Option("float", "global-norm gradient clip; 0 = off", low=0),
    "loss_scale": _pos("float", "loss scale; the initial one when dynamic"),
    "loss_scale_mode": Option("str", "static: fixed | dynamic: skip overflowing steps, adjust", choices=("static", "dynamic")),
    "loss_scale_factor": Option("int", "dynamic loss scale: factor of a change", low=2),
    "loss_scale_window": Option("int", "dynamic loss scale: clean steps before it grows", low=1),
    "accumulate": Option("int", "micro-batches (of batch_size) per optimizer step", low=1),
    "contrastive_weight": Option("float", "weight of the patch contrastive loss", low=0),
    "contrastive_temperature": _pos("float", "temperature of the contrastive loss"),
    "pretrained": Option("str", "finetune: start from this checkpoint"),
    "init_from": Option("str", "finetune: warm start from another task's checkpoint (e.g. sr_x2 for sr_x4)"),
    "out_dir": Option("str", "training run folder (checkpoints, logs)"),
    "save_every": Option("int", "checkpoint every N steps", low=1),
    "keep_last": Option("int", "rolling checkpoints kept; 0 = all", low=0),
    "log_every": Option("int", "log every N steps", low=1),
    "resume": Option("bool", "continue the newest checkpoint in out_dir"),
    "workers": Option("int", "data loader workers", low=1, high=256),
    "worker_processes": Option("bool", "data workers as processes; null = when streaming", nullable=True),
    "distribute": Option("bool", "data parallel over msrun workers"),
    "val_path": Option("str", "validation images: default | DIR | task=DIR,...; null = off", nullable=True),
    "val_every": Option("int", "validate every N steps; 0 = at every save_every", low=0),
    "val_limit": Option("int", "first N images of each validation set; 0 = all", low=0),
    "ema_decay": Option("float", "EMA of the weights; 0 = off", low=0, high=1, high_open=True),
    "stop_after": Option("int", "stop this run after N steps (resume later); 0 = run to steps", low=0),
    # ---- export
    "file_format": Option("str", "export format", choices=("MINDIR", "ONNX", "AIR"), upper=True),
    "file_name": Option("str", "export: output file (suffix optional)"),
    "export_batch": Option("int", "export: batch of the exported graph; 0 = any (MINDIR only)", low=0),
}


RUN_KEYS = ("config_path", "overridden")  # set by load_config, not options


class OptionError(ValueError):
    """A value that the schema does not allow (the message is one line)."""


def _number(key: str, value: Any, opt: Option, integer: bool):
    if isinstance(value, str) and not integer:  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
        raise OptionError(f"--{key} must be {opt.allowed()}, not {value!r}")
    value = int(value) if integer else float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise OptionError(f"--{key} must be {opt.allowed()}, not {value!r}")
    too_low = opt.low is not None and (value <= opt.low if opt.low_open else value < opt.low)
    too_high = opt.high is not None and (value >= opt.high if opt.high_open else value > opt.high)
    if too_low or too_high:
        raise OptionError(f"--{key} must be {opt.allowed()}, not {value!r}")
    return value


def check_value(key: str, value: Any) -> Any:
    """The value in its declared type (ints as floats where floats are declared); else OptionError."""
    opt = SCHEMA.get(key)
    if opt is None:
        raise OptionError(f"unknown option '{key}' (see default_config.yaml for the keys)")
    if value is None:
        if opt.nullable:
            return None
        raise OptionError(f"--{key} must be {opt.allowed()}, not null")
    if opt.kind == "bool":
        if not isinstance(value, bool):
            raise OptionError(f"--{key} must be true or false, not {value!r}")
        return value
    if opt.kind in ("int", "float"):
        value = _number(key, value, opt, opt.kind == "int")
    elif opt.kind == "str":
        if isinstance(value, (int, float)) and not isinstance(value, bool) and opt.choices is None:
            value = str(value)  # a file named 2024 is still a name
        if not isinstance(value, str):
            raise OptionError(f"--{key} must be {opt.allowed()}, not {value!r}")
        if opt.upper:
            value = value.upper()
    elif opt.kind == "task":
        if not isinstance(value, str):
            raise OptionError(f"--{key} must be {opt.allowed()}, not {value!r}")
        value = _tasks(key, value, opt)[0]
    elif opt.kind == "tasks":
        value = _tasks(key, value, opt)
    elif opt.kind == "pair":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise OptionError(f"--{key} must be {opt.allowed()}, not {value!r}")
        value = [_number(key, v, Option("float", opt.help, low=opt.low, high=opt.high, high_open=True), False)
                 for v in value]
    if opt.choices is not None and value not in opt.choices:
        raise OptionError(f"--{key} must be {opt.allowed()}, not {value!r}")
    return value


def _tasks(key: str, value: Any, opt: Option) -> list:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise OptionError(f"--{key} must be {opt.allowed()}, not {value!r}")
    unknown = [v for v in value if v not in TASKS]
    if unknown:
        raise OptionError(f"--{key}: unknown task '{unknown[0]}'; choose from {', '.join(TASKS)}")
    if len(set(value)) != len(value):
        raise OptionError(f"--{key} repeats a task: {list(value)}")
    return list(value)


def check_config(cfg: dict, keys: Optional[Sequence[str]] = None) -> None:
    """Check (and normalise in place) every declared key of cfg, then the rules across keys."""
    for key in keys if keys is not None else [k for k in cfg if k not in RUN_KEYS]:
        cfg[key] = check_value(key, cfg[key])
    if cfg.get("lr_schedule") == "cosine" and "lr_max" in cfg and "lr_min" in cfg and cfg["lr_min"] > cfg["lr_max"]:
        raise OptionError(f"--lr_min ({cfg['lr_min']}) must not exceed --lr_max ({cfg['lr_max']})")
    if "patch_size" in cfg and "patch_dim" in cfg and cfg["patch_size"] % cfg["patch_dim"]:
        raise OptionError(f"--patch_size {cfg['patch_size']} must be a multiple of --patch_dim {cfg['patch_dim']}")
