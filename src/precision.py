"""Mixed precision (`--amp_level`, `--compute_dtype`) and loss scaling (`--loss_scale_mode`): the policy.

Levels keep MindSpore's names and meanings (`mindspore.amp.auto_mixed_precision`):
  O0  float32 everywhere (today's numerics, bit for bit).
  O1  only the white list in the low dtype: MindSpore's white-list cells (nn.Dense, nn.Conv2d, ...)
      plus the attention's matmuls (`src.transformer.MatMul`); each returns float32.
  O2  everything in the low dtype except the black list, which stays float32: MindSpore's
      (nn.LayerNorm, BatchNorm), our own `src.common.LayerNorm` (not an nn.LayerNorm), the
      attention softmax (`src.transformer.Softmax`) and the frozen mean shifts (`MeanShift`,
      so the 0..255 input and output are not rounded to float16's 1/8 step near 255).
  O3  everything in the low dtype.
The loss (L1, the contrastive term with its normalisation) is outside the converted network: the
task cell returns float32 (`TaskNet`), so the loss always runs in float32. Parameters stay float32
(master weights; the casts are inside the graph), so Adam state and checkpoints are float32 and a
checkpoint loads into any level.

O2/O3 go through `amp.custom_mixed_precision` / `amp.auto_mixed_precision` (MindSpore's cell flags,
`to_float`). O1 is built from the same `to_float` flags on the white-list cells: MindSpore's O1
rewrites the top cell's construct source (mindspore.rewrite) and does not see through our
`TaskNet -> IPT.forward_slot` method calls, so on this model it converted nothing (output equal to
float32's bit for bit).

The conversion is applied once, in place, to the whole IPT model (all task cells share it).
Dynamic loss scaling is `amp.DynamicLossScaler` (scale, unscale, adjust) with `amp.all_finite`
in the train step (src/trainer.py `TaskStep`); a static scale stays the step's Python factor.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

LOG = logging.getLogger(__name__)

AMP_LEVELS = ("O0", "O1", "O2", "O3")
COMPUTE_DTYPES = ("float16", "bfloat16")
LOSS_SCALE_MODES = ("static", "dynamic")


class PrecisionError(ValueError):
    """A precision option that cannot work here (a one-line message)."""


def check_precision(cfg, device_target: Optional[str] = None) -> None:
    """Refuse what cannot run, before MindSpore starts: bfloat16 on CPU, a dynamic scale below 1."""
    target = str(device_target or getattr(cfg, "device_target", "CPU")).upper()
    level = getattr(cfg, "amp_level", "O0")
    if level != "O0" and cfg.compute_dtype == "bfloat16" and target == "CPU":
        raise PrecisionError("--compute_dtype bfloat16: MindSpore 2.10 has no bfloat16 CPU kernels "
                             "(bf16 is for Ascend 910B); use float16 or --amp_level O0 on CPU")
    if level != "O0" and target == "CPU":
        LOG.warning("amp_level %s (%s) on CPU: float16 CPU kernels are much slower than float32 "
                    "(use it on GPU/Ascend; here only to check the numerics)", level, cfg.compute_dtype)
    if getattr(cfg, "loss_scale_mode", "static") == "dynamic" and cfg.loss_scale < 1:
        raise PrecisionError(f"--loss_scale {cfg.loss_scale}: a dynamic loss scale starts at >= 1")


def ms_dtype(name: str):
    """The MindSpore dtype of a --compute_dtype name."""
    import mindspore as ms
    return {"float16": ms.float16, "bfloat16": ms.bfloat16}[name]


def fp32_cells() -> tuple:
    """The O2 black list: cells kept in float32."""
    from mindspore import amp
    from src.common import LayerNorm, MeanShift
    from src.transformer import Softmax
    return tuple(amp.get_black_list()) + (LayerNorm, Softmax, MeanShift)


def low_cells() -> tuple:
    """The O1 white list as cells: MindSpore's white-list cells plus our attention matmul cell."""
    from mindspore import amp, nn
    from src.transformer import MatMul
    return tuple(c for c in amp.get_white_list() if isinstance(c, type) and issubclass(c, nn.Cell)) + (MatMul,)


def _convert_white_list(network, white: tuple, dtype) -> bool:
    """O1: every white-list cell computes in `dtype` and returns float32 (MindSpore's own wrapper)."""
    from mindspore import nn
    from mindspore.train.amp import _OutputTo32
    cells = network.name_cells()
    changed = False
    for name, sub in cells.items():
        if sub is network:
            continue
        if isinstance(sub, white):
            network._cells[name] = _OutputTo32(sub.to_float(dtype))
            changed = True
        else:
            _convert_white_list(sub, white, dtype)
    if isinstance(network, nn.SequentialCell) and changed:
        network.cell_list = list(network.cells())
    return changed


def apply_precision(model, amp_level: str, compute_dtype: str = "float16"):
    """Convert an IPT model in place to `amp_level` (before any of its task graphs is compiled).

    Returns the model. Its parameters keep their names and float32 values; `model.amp_level` and
    `model.low_precision` (outputs to be cast back to float32 by `TaskNet`) record the result.
    """
    if amp_level not in AMP_LEVELS:
        raise PrecisionError(f"--amp_level must be one of {', '.join(AMP_LEVELS)}, not {amp_level!r}")
    if getattr(model, "amp_level", "O0") != "O0":
        if model.amp_level == amp_level:
            return model
        raise PrecisionError(f"the model is already converted to {model.amp_level}")
    model.amp_level = amp_level
    model.low_precision = amp_level in ("O2", "O3")
    if amp_level == "O0":
        return model
    from mindspore import amp
    dtype = ms_dtype(compute_dtype)
    if amp_level == "O1":
        _convert_white_list(model, low_cells(), dtype)
    elif amp_level == "O2":
        amp.custom_mixed_precision(model, black_list=list(fp32_cells()), dtype=dtype)  # in place; drop the wrapper
    else:
        amp.auto_mixed_precision(model, "O3", dtype)
    LOG.info("mixed precision %s in %s (float32 master weights%s)", amp_level, compute_dtype,
             ", LayerNorm/softmax/mean shift in float32" if amp_level == "O2" else "")
    return model


# ----------------------------------------------------------------------------- loss scaling


@dataclass
class LossScaling:
    """The train step's loss-scale policy: a dynamic one (amp.DynamicLossScaler), or a static factor."""

    mode: str
    scaler: object = None          # amp.DynamicLossScaler when dynamic
    factor: int = 2
    window: int = 1000
    static_value: float = 1.0

    @property
    def dynamic(self) -> bool:
        return self.mode == "dynamic"

    @property
    def value(self) -> float:
        """The current scale (read from the scaler's Parameter: the compiled steps update it)."""
        if not self.dynamic:
            return self.static_value
        return float(self.scaler.scale_value.asnumpy())

    @property
    def counter(self) -> int:
        """Clean steps since the last change of a dynamic scale."""
        return int(self.scaler.counter.asnumpy()) if self.dynamic else 0

    def state(self) -> dict:
        """Checkpoint metadata (strings: see Trainer.checkpoint_extra)."""
        return {"loss_scale": repr(self.value), "loss_scale_counter": str(self.counter)}

    def load_state(self, meta: dict, source: str) -> None:
        """Continue a run's scale; a checkpoint without it (static run, older file) keeps the config's."""
        import mindspore as ms
        if not self.dynamic or meta.get("loss_scale") is None:
            return
        self.scaler.scale_value.set_data(ms.Tensor(float(str(meta["loss_scale"])), ms.float32))
        self.scaler.counter.set_data(ms.Tensor(int(str(meta.get("loss_scale_counter", "0"))), ms.int32))
        LOG.info("loss scale %g (counter %d) restored from %s", self.value, self.counter, source)


def make_loss_scaling(cfg) -> LossScaling:
    """From the config: dynamic (amp.DynamicLossScaler, skips overflowing steps), or static.

    The static mode keeps the train step's existing graph (a Python factor; none at all for 1, so
    O0 with scale 1 is bit-identical to the code before mixed precision). amp.StaticLossScaler is
    not used for it: it refuses scales below 1, which `--loss_scale` allows, and adds nothing else.
    """
    from mindspore import amp
    mode = getattr(cfg, "loss_scale_mode", "static")
    factor, window = int(getattr(cfg, "loss_scale_factor", 2)), int(getattr(cfg, "loss_scale_window", 1000))
    if mode == "dynamic":
        return LossScaling(mode, amp.DynamicLossScaler(float(cfg.loss_scale), factor, window), factor, window)
    if mode != "static":
        raise PrecisionError(f"--loss_scale_mode must be static or dynamic, not {mode!r}")
    return LossScaling(mode, None, factor, window, float(cfg.loss_scale))
