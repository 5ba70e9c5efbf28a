"""Exported IPT task graphs (MindIR, ONNX): what goes into them, and running them on tile batches.

An export holds one task: the shared body plus that task's head, tail and query row (the task cell
of a checkpoint with its query table cut to that row). The file records its task in its metadata
(MindIR `user_info`, ONNX `metadata_props`), so a runner can refuse an export of another task;
files without it are still checked by their output scale. A fixed-batch file is fed exactly its
batch (tiles chunked and padded with zero tiles), so the tiler's batch size never has to match it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from src.checkpoint import CheckpointError
from src.config import Config
from src.slots import query_rows
from src.tasks import PATCH, Task, get_task
from src.utils import short_reason
from src.weights import load_task_model

LOG = logging.getLogger(__name__)

SUFFIXES = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
MANIFEST = "ipt_manifest.json"  # preprocess.py's record of the tile files, read by postprocess.py
TILES_FORMAT = "ipt-tiles-1"
Runner = Callable[[np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------- building
def export_cell(cfg: Config, task: Task, path: Path):
    """The task's inference cell of a checkpoint (`load_task_model`: same config resolution, strict
    load), trimmed so the exported graph holds only the body and this task's own parameters.

    A MindIR keeps just the parameters its graph uses, so other tasks' heads and tails stay out,
    but the query table is indexed inside the graph and would go in whole: keep the task's row.
    """
    import mindspore as ms
    net = load_task_model(cfg, task, Path(path))
    model, body = net.model, net.model.body
    if getattr(body, "use_mlp", False) and model.num_queries > 1:
        row = query_rows(body.query_embed.weight, [net.slot], 1)
        body.query_embed.weight = ms.Parameter(ms.Tensor(np.ascontiguousarray(row)),
                                               name=body.query_embed.weight.name)
        model.num_queries = 1  # forward_slot now reads row 0, the task's own
    return net


def export_metadata(task: Task, batch: int, source: str) -> Dict[str, str]:
    """What a runner needs to refuse a wrong file: its task, scale and batch (0 = any)."""
    return {"ipt_task": task.name, "ipt_scale": str(task.scale), "ipt_batch": str(batch),
            "ipt_source": Path(source).name}


# ----------------------------------------------------------------------------- describing
@dataclass
class ExportInfo:
    """An exported file's single input and output shapes (None = dynamic axis) and metadata."""

    path: Path
    input_shape: Tuple[Optional[int], ...]
    output_shape: Tuple[Optional[int], ...]
    meta: Dict[str, str]

    @property
    def batch(self) -> Optional[int]:
        return self.input_shape[0] if self.input_shape else None

    @property
    def scale(self) -> Optional[int]:
        out = self.output_shape[-1] if self.output_shape else None
        if out:
            return out // PATCH
        return int(self.meta["ipt_scale"]) if self.meta.get("ipt_scale") else None

    @property
    def task(self) -> Optional[str]:
        return self.meta.get("ipt_task") or None


def _dims(values) -> Tuple[Optional[int], ...]:
    return tuple(int(v) if isinstance(v, (int, np.integer)) and int(v) > 0 else None for v in values)


def read_mindir_proto(path: Path):
    """The MindIR protobuf (graph inputs/outputs, parameters, user_info) without compiling it."""
    try:
        from mindspore.train.mind_ir_pb2 import ModelProto
    except ImportError:  # the module moved; the deprecated public loader returns the same proto
        import mindspore as ms
        return ms.load_mindir(str(path))
    proto = ModelProto()
    proto.ParseFromString(path.read_bytes())
    return proto


def mindir_info(path: Path) -> ExportInfo:
    """Input/output shapes and metadata of a MindIR file, read from its protobuf (no compile)."""
    try:
        proto = read_mindir_proto(path)
    except Exception as err:  # protobuf raises DecodeError and friends for a foreign file
        raise CheckpointError(f"{path} is not a readable MindIR file ({short_reason(err)})") from None
    graph = proto.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise CheckpointError(f"{path} has {len(graph.input)} inputs and {len(graph.output)} outputs; "
                              f"an IPT export has one of each")
    in_dims = _dims(graph.input[0].tensor[0].dims) if graph.input[0].tensor else ()
    out_dims = _dims(graph.output[0].tensor[0].dims) if graph.output[0].tensor else ()
    return ExportInfo(path, in_dims, out_dims, dict(proto.user_info))


def onnx_info(path: Path, session) -> ExportInfo:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise CheckpointError(f"{path} has {len(inputs)} inputs and {len(outputs)} outputs; "
                              f"an IPT export has one of each")
    meta = dict(session.get_modelmeta().custom_metadata_map)
    return ExportInfo(path, _dims(inputs[0].shape), _dims(outputs[0].shape), meta)


def check_export(info: ExportInfo, task: Task) -> None:
    """One-line errors for a file that is not a 48x48 IPT tile graph of this task."""
    shape = info.input_shape
    if len(shape) != 4 or tuple(shape[1:]) != (3, PATCH, PATCH):
        raise CheckpointError(f"{info.path} takes input {_fmt(shape)}, not (N,3,{PATCH},{PATCH}) tiles: "
                              f"not an IPT export")
    if info.task and info.task != task.name:
        raise CheckpointError(f"{info.path} was exported for {info.task} (x{info.scale}), not {task.name} "
                              f"(x{task.scale}) (export the {task.name} task: export.py --task {task.name})")
    if info.scale is not None and info.scale != task.scale:
        raise CheckpointError(f"{info.path} has output scale x{info.scale} but {task.name} needs x{task.scale} "
                              f"(export the {task.name} task: export.py --task {task.name})")
    out = info.output_shape
    if len(out) == 4 and out[2] is not None and out[2:] != (PATCH * task.scale,) * 2:
        raise CheckpointError(f"{info.path} outputs {_fmt(out)}, {task.name} needs "
                              f"(N,3,{PATCH * task.scale},{PATCH * task.scale})")


def _fmt(shape) -> str:
    return "(" + ",".join("?" if d is None else str(d) for d in shape) + ")"


# ----------------------------------------------------------------------------- running
class FixedBatchRunner:
    """Feeds a graph compiled for `batch` tiles (None: any batch) from batches of any size."""

    def __init__(self, fn: Runner, batch: Optional[int], out_side: int) -> None:
        self.fn, self.batch, self.out_side = fn, batch, out_side

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        tiles = np.ascontiguousarray(tiles, dtype=np.float32)
        n = self.batch or tiles.shape[0]
        if tiles.shape[0] == n:
            return np.asarray(self.fn(tiles), dtype=np.float32)
        out = np.empty((tiles.shape[0], 3, self.out_side, self.out_side), np.float32)
        for start in range(0, tiles.shape[0], n):
            chunk = tiles[start:start + n]
            k = chunk.shape[0]
            if k < n:  # zero tiles fill the last call; their outputs are dropped
                chunk = np.concatenate([chunk, np.zeros((n - k,) + chunk.shape[1:], np.float32)])
            out[start:start + k] = np.asarray(self.fn(chunk))[:k]
        return out


def _mindir_fn(path: Path) -> Runner:
    import mindspore as ms
    from mindspore import nn
    try:
        cell = nn.GraphCell(ms.load(str(path)))
    except (RuntimeError, ValueError) as err:
        raise CheckpointError(f"{path}: MindSpore cannot load it ({short_reason(err)})") \
            from None

    def run(batch: np.ndarray) -> np.ndarray:
        return cell(ms.Tensor(batch)).asnumpy()
    return run


def _onnx_session(path: Path):
    try:
        import onnxruntime as ort
    except ImportError:
        raise CheckpointError("running .onnx files needs onnxruntime: pip install onnxruntime") from None
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types
        raise CheckpointError(f"{path} is not a loadable ONNX model ({short_reason(err)})") \
            from None


def load_exported_runner(path, task: Task, batch: int) -> Runner:
    """A tile runner (N,3,48,48) float32 0..255 -> (N,3,48s,48s) from a .mindir or .onnx export.

    Refuses, in one line, a file of another task or scale; `batch` is the tiler's batch size
    (any value works: a fixed-batch file is chunked and padded to its own batch).
    """
    path = Path(path)
    task = get_task(task) if isinstance(task, str) else task
    if not path.is_file():
        raise CheckpointError(f"exported model not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".mindir":
        info = mindir_info(path)
        check_export(info, task)
        fn = _mindir_fn(path)
    elif suffix == ".onnx":
        session = _onnx_session(path)
        info = onnx_info(path, session)
        check_export(info, task)
        name = session.get_inputs()[0].name

        def fn(tiles: np.ndarray) -> np.ndarray:
            return session.run(None, {name: tiles})[0]
    else:
        raise CheckpointError(f"{path}: exported models are .mindir or .onnx files")
    if info.batch and info.batch != int(batch):
        calls = -(-int(batch) // info.batch)
        LOG.info("%s takes batches of %d tiles: each batch of %d runs as %d call%s%s", path.name,
                 info.batch, batch, calls, "s" if calls > 1 else "",
                 f" ({calls * info.batch - int(batch)} padding tile(s))" if calls * info.batch != int(batch) else "")
    LOG.info("running %s (%s, batch %s, %s)", path.name, suffix[1:].upper(), info.batch or "any",
             info.task or f"x{task.scale}, no task recorded")
    return FixedBatchRunner(fn, info.batch, PATCH * task.scale)


def run_bin_folder(runner: Runner, in_dir: Path, out_dir: Path, tile_shape: Tuple[int, ...],
                   out_side: int) -> List[Path]:
    """What ascend310_infer/ does, on this machine: each `*.bin` tile batch of in_dir through the
    runner, the output written under the same name in out_dir (a CPU stand-in for the 310)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for src in sorted(Path(in_dir).glob("*.bin")):
        tiles = np.fromfile(src, dtype=np.float32)
        per_tile = int(np.prod(tile_shape))
        if tiles.size % per_tile:
            raise CheckpointError(f"{src}: {tiles.size} floats is not a whole number of {tile_shape} tiles")
        tiles = tiles.reshape((-1,) + tuple(tile_shape))
        out = np.ascontiguousarray(runner(tiles), dtype=np.float32)
        if out.shape != (tiles.shape[0], 3, out_side, out_side):
            raise CheckpointError(f"{src}: the model returned {out.shape}")
        out.tofile(out_dir / src.name)
        written.append(out_dir / src.name)
    return written
