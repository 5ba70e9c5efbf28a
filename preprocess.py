"""Cut a benchmark into the tile batches an exported IPT runs on (Ascend 310: ascend310_infer/).

    python preprocess.py --task sr_x2 --data_path ../shared/datasets/CSet5 \
        --output preprocess_Result --ckpt ipt_sr_x2.mindir

Tiles come from eval.py's own tiler (same options: --tiling, --tile_overlap, --self_ensemble), run
with a tile function that records each batch: every call becomes one `.bin` file of float32
(N, 3, 48, 48) in 0..255, C order, N = the tile batch (the MindIR's batch when `--ckpt` names one).
`ipt_manifest.json` records the images, their files and the tiling, so postprocess.py replays
the same tiler over the model's outputs and scores exactly what eval.py would.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import List

import numpy as np

from src.benchmarks import open_benchmark
from src.checkpoint import CheckpointError
from src.config import Config, start_command
from src.exported import MANIFEST, TILES_FORMAT, check_export, mindir_info
from src.pairs import PairLayoutError
from src.tasks import PATCH, Task
from src.utils import Progress, fail, run_command

LOG = logging.getLogger("preprocess")


class TileRecorder:
    """A tile function that saves each batch it is given and returns zeros of the output shape."""

    def __init__(self, out_dir: Path, scale: int) -> None:
        self.out_dir, self.side = out_dir, PATCH * scale
        self.prefix: str = ""
        self.files: List[str] = []

    def start(self, index: int) -> None:
        self.prefix, self.files = f"{index:04d}", []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        name = f"{self.prefix}_{len(self.files):05d}.bin"
        np.ascontiguousarray(batch, dtype=np.float32).tofile(self.out_dir / name)
        self.files.append(name)
        return np.zeros((batch.shape[0], 3, self.side, self.side), np.float32)


def tile_batch_of(cfg: Config, task: Task) -> int:
    """The tile batch: the exported file's own batch when --ckpt names a fixed-batch MindIR."""
    batch = cfg.tile_batch
    if not cfg.ckpt or Path(cfg.ckpt).suffix.lower() != ".mindir":
        return batch
    info = mindir_info(Path(cfg.ckpt))
    check_export(info, task)
    if info.batch and info.batch != batch:
        LOG.info("%s takes batches of %d tiles: using --tile_batch %d", Path(cfg.ckpt).name, info.batch,
                 info.batch)
        return info.batch
    return batch


def main(argv=None) -> int:
    cfg, task = start_command(argv, __doc__, need_data=True)
    if not cfg.output:
        fail("give --output, the folder for the tile files")
    out_dir = Path(cfg.output)
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"--output must be a folder: {out_dir} is a file")
    old = (sorted(out_dir.glob("*.bin")) + sorted(out_dir.glob(MANIFEST))) if out_dir.is_dir() else []
    if old and not cfg.overwrite:
        fail(f"{out_dir} already holds tile files; pass --overwrite to replace them")
    try:
        batch = tile_batch_of(cfg, task)
        bench = open_benchmark(cfg.data_path, task.kind, task.scale, task.sigma, seed=cfg.noise_seed)
    except (CheckpointError, PairLayoutError) as err:  # before any old tile file is removed
        fail(str(err))
    if len(bench) == 0:
        fail(f"no benchmark images found in {cfg.data_path} for {task.name}")
    for path in old:
        path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)

    from src.inference import make_tiler, restore_array
    cfg = Config(cfg, tile_batch=batch)
    recorder = TileRecorder(out_dir, task.scale)
    tiler = make_tiler(cfg, task, recorder)
    images, progress = [], Progress(len(bench), "preprocess", logger=LOG)
    for index, item in enumerate(bench):
        recorder.start(index)
        restore_array(item.input, tiler)
        images.append({"name": item.name, "height": int(item.input.shape[0]),
                       "width": int(item.input.shape[1]), "gray": bool(item.is_gray),
                       "tiles": tiler.stats.tiles, "files": recorder.files})
        progress.update(len(images))
    manifest = {
        "format": TILES_FORMAT, "task": task.name, "scale": task.scale,
        "data_path": str(Path(cfg.data_path).resolve()), "noise_seed": cfg.noise_seed,
        "tiling": cfg.tiling, "tile_batch": batch, "tile_overlap": tiler.overlap,
        "self_ensemble": cfg.self_ensemble,
        "input_shape": [batch, 3, PATCH, PATCH], "output_shape": [batch, 3, PATCH * task.scale, PATCH * task.scale],
        "dtype": "float32", "model": str(cfg.ckpt or ""),
        "images": images, "skipped": [s.path for s in bench.skipped],
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1))
    files = sum(len(i["files"]) for i in images)
    LOG.info("%s: %d images -> %d tile batches of %s in %s (%.1f MB)", task.name, len(images), files,
             "x".join(map(str, manifest["input_shape"])), out_dir,
             files * batch * 3 * PATCH * PATCH * 4 / 2 ** 20)
    return 0


if __name__ == "__main__":
    run_command(main)
