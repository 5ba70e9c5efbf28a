"""Export one IPT task to MindIR, ONNX or AIR, for inference outside this code base.

    python export.py --config ipt_tiny --ckpt ipt_tiny.ckpt --task sr_x2 --file_format MINDIR \
        --export_batch 8 --file_name ipt_tiny_sr_x2
    python export.py --ckpt ipt.ckpt --task denoise_30 --file_format ONNX --file_name ipt_dn30

The file holds the shared body and the task's own head, tail and query embedding, with one input
(export_batch, 3, 48, 48) float32 in 0..255 and one output (export_batch, 3, 48s, 48s). Whole images
go through the same tiling as eval.py: `eval.py --ckpt ipt_tiny_sr_x2.mindir` (or .onnx), or
scripts/run_infer_310.sh on an Ascend 310. `--export_batch 0` exports a MindIR that takes any batch.
AIR needs an Ascend device. An existing file is never replaced without `--overwrite`.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from src.checkpoint import CheckpointError
from src.config import Config, parse_cli
from src.exported import SUFFIXES, check_export, export_cell, export_metadata, mindir_info
from src.tasks import PATCH, Task, get_task
from src.utils import check_output_file, fail, publish, run_command, setup_device, setup_logging, short_reason
from src.weights import resolve_checkpoint

LOG = logging.getLogger("export")


def output_path(file_name: str, file_format: str) -> Path:
    """--file_name with the format's suffix (given or not): `ipt` -> `ipt.mindir`."""
    path = Path(str(file_name))
    suffix = SUFFIXES[file_format]
    return path if path.suffix.lower() == suffix else path.with_name(path.name + suffix)


def _add_onnx_metadata(path: Path, meta: dict) -> None:
    try:
        import onnx
    except ImportError:
        LOG.warning("onnx is not installed: the file does not record its task (runners still check "
                    "its scale); pip install onnx to record it")
        return
    model = onnx.load(str(path))
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def export_model(net, task: Task, file_format: str, batch: int, out: Path, meta: dict) -> float:
    """Write the file atomically (temp name, then rename); returns the ms.export seconds."""
    import mindspore as ms
    if batch > 0:
        example = ms.Tensor(np.zeros((batch, 3, PATCH, PATCH), np.float32))
    else:
        example = ms.Tensor(shape=[None, 3, PATCH, PATCH], dtype=ms.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_stem = out.with_name(f".{out.stem}.tmp{os.getpid()}")
    tmp = tmp_stem.with_name(tmp_stem.name + SUFFIXES[file_format])
    kwargs = {}
    from src.common import for_export
    for_export(net)  # one LayerNorm op per norm: every runtime has it
    if file_format == "ONNX":
        from src.transformer import for_onnx_export
        for_onnx_export(net)
    if file_format == "MINDIR":
        def record(proto) -> None:
            for key, value in meta.items():
                proto.user_info[key] = value
        kwargs["custom_func"] = record
    start = time.perf_counter()
    try:
        ms.export(net, example, file_name=str(tmp_stem), file_format=file_format, **kwargs)
        seconds = time.perf_counter() - start
        if not tmp.is_file():
            raise CheckpointError(f"MindSpore wrote no {tmp.name} (model too large for one file?)")
        if file_format == "ONNX":
            _add_onnx_metadata(tmp, meta)
        publish(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return seconds


def _count_mindir_parameters(path: Path) -> int:
    from src.exported import read_mindir_proto
    return int(sum(np.prod(p.dims) for p in read_mindir_proto(path).graph.parameter))


def main(argv=None) -> int:
    cfg: Config = parse_cli(argv, description=__doc__)
    setup_logging(cfg.log_level)
    try:
        task = get_task(cfg.task)
    except ValueError as err:
        fail(str(err))
    file_format = cfg.file_format
    if file_format == "AIR" and cfg.device_target != "Ascend":
        fail(f"AIR export needs an Ascend device (--device_target Ascend, not {cfg.device_target}); "
             f"here export MINDIR (Ascend 310: ascend310_infer/) or ONNX")
    batch = cfg.export_batch
    if batch == 0 and file_format != "MINDIR":
        fail(f"--export_batch 0 (any batch) is for MINDIR only; give a batch >= 1 for {file_format}")
    if not cfg.file_name:
        fail("give --file_name (the output file, suffix optional)")
    out = output_path(cfg.file_name, file_format)
    check_output_file(out, "file_name", cfg.overwrite)
    if cfg.ckpt and Path(cfg.ckpt).suffix.lower() in (".mindir", ".onnx", ".air"):
        fail(f"--ckpt must be a .ckpt checkpoint; {cfg.ckpt} is already an export")
    setup_device(cfg, native_convs=True)  # an exported file holds MindSpore's own Conv2D: portable
    start = time.perf_counter()
    try:
        path = resolve_checkpoint(cfg, task)
        net = export_cell(cfg, task, path)
    except CheckpointError as err:
        fail(str(err))
    LOG.info("loaded %s task %s (%.1f s)", path.name, task.name, time.perf_counter() - start)
    meta = export_metadata(task, batch, str(path))
    try:
        seconds = export_model(net, task, file_format, batch, out, meta)
    except (CheckpointError, RuntimeError, ValueError, TypeError) as err:
        fail(f"{file_format} export failed: {short_reason(err)}")
    size = out.stat().st_size
    if file_format == "MINDIR":
        try:
            check_export(mindir_info(out), task)
        except CheckpointError as err:
            fail(f"the written file does not check out: {err}")
        LOG.info("the file holds %d parameters", _count_mindir_parameters(out))
    shape = f"({batch or 'N'},3,{PATCH},{PATCH}) -> ({batch or 'N'},3,{PATCH * task.scale},{PATCH * task.scale})"
    LOG.info("exported %s %s %s to %s: %.1f MB in %.1f s", task.name, file_format, shape, out,
             size / 2 ** 20, seconds)
    return 0


if __name__ == "__main__":
    run_command(main)
