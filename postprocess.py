"""Stitch the model's outputs for preprocess.py's tile batches and score them as eval.py does.

    python postprocess.py --pre_path preprocess_Result --result_path result_Files
    python postprocess.py --pre_path preprocess_Result --result_path result_Files --stand_in ipt_sr_x2.mindir

`--result_path` holds one output `.bin` per input `.bin` (same name, float32 (N, 3, 48s, 48s)), as
ascend310_infer/ writes them. The tiler of eval.py is replayed with the manifest's options and a
tile function that returns the saved outputs in order, so PSNR/SSIM (quantized, task crop border,
--metric y by default) equal eval.py's for the same model. `--stand_in MODEL` first runs a
.mindir/.onnx (or .ckpt, with its --config) on this machine's CPU in place of the 310.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Iterator, List, Optional

import numpy as np

from src.benchmarks import open_benchmark
from src.checkpoint import CheckpointError
from src.config import Config, parse_cli
from src.exported import MANIFEST, TILES_FORMAT, run_bin_folder
from src.metrics import psnr, quantize, ssim
from src.tasks import PATCH, get_task
from src.utils import EXPORTED_SUFFIXES, fail, report_result, run_command, setup_device, setup_logging

LOG = logging.getLogger("postprocess")


class TileReplay:
    """A tile function that returns the saved outputs of one image's batches, in recorded order."""

    def __init__(self, pre_dir: Path, result_dir: Path, in_shape: List[int], out_shape: List[int]) -> None:
        self.pre_dir, self.result_dir = pre_dir, result_dir
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.files: Iterator[str] = iter(())

    def start(self, files: List[str]) -> None:
        self.files, self.expected = iter(files), len(files)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        name = next(self.files, None)
        if name is None:
            raise CheckpointError("the tiler asks for more batches than preprocess.py wrote "
                                  "(data or tiling changed since?)")
        pre = self.pre_dir / name
        if pre.is_file() and not np.array_equal(np.fromfile(pre, np.float32).reshape(self.in_shape), batch):
            raise CheckpointError(f"{pre} differs from the tiles the tiler makes now "
                                  f"(data or tiling changed since preprocess.py?)")
        out = self.result_dir / name
        if not out.is_file():
            raise CheckpointError(f"{out} is missing: did inference finish?")
        data = np.fromfile(out, np.float32)
        if data.size != int(np.prod(self.out_shape)):
            raise CheckpointError(f"{out} holds {data.size} floats, expected {'x'.join(map(str, self.out_shape))}"
                                  f" (wrong model or task?)")
        return data.reshape(self.out_shape)

    def finish(self, image: str) -> None:
        if next(self.files, None) is not None:
            raise CheckpointError(f"{image}: the tiler used fewer batches than preprocess.py wrote "
                                  f"(data or tiling changed since?)")


def read_manifest(pre_dir: Path) -> dict:
    path = pre_dir / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{path} not found: run preprocess.py first")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != TILES_FORMAT:
        raise CheckpointError(f"{path} is not a {TILES_FORMAT} manifest")
    return manifest


def score(manifest: dict, pre_dir: Path, result_dir: Path, metric: str) -> dict:
    """Replay the tiler over the outputs; per-image and mean PSNR/SSIM (the eval.py protocol)."""
    from src.inference import make_tiler, restore_array
    task = get_task(manifest["task"])
    bench = open_benchmark(manifest["data_path"], task.kind, task.scale, task.sigma,
                           seed=int(manifest["noise_seed"]))
    entries = {e["name"]: e for e in manifest["images"]}
    tcfg = Config(tiling=manifest["tiling"], tile_batch=manifest["tile_batch"],
                  tile_overlap=manifest["tile_overlap"], self_ensemble=manifest["self_ensemble"])
    replay = TileReplay(pre_dir, result_dir, manifest["input_shape"], manifest["output_shape"])
    tiler = make_tiler(tcfg, task, replay)
    rows = []
    for item in bench:
        entry = entries.pop(item.name, None)
        if entry is None:
            raise CheckpointError(f"{item.name} is in {manifest['data_path']} but not in the manifest "
                                  f"(run preprocess.py again)")
        replay.start(entry["files"])
        out = quantize(restore_array(item.input, tiler))
        replay.finish(item.name)
        row = {"name": item.name, "psnr": psnr(out, item.target, task.crop_border, metric),
               "ssim": ssim(out, item.target, task.crop_border, metric), "tiles": tiler.stats.tiles}
        rows.append(row)
        LOG.info("%-16s PSNR %.3f dB  SSIM %.4f", item.name, row["psnr"], row["ssim"])
    if entries:
        raise CheckpointError(f"{len(entries)} manifest images are missing from {manifest['data_path']}, "
                              f"first {next(iter(entries))}")
    return {"task": task.name, "data_path": manifest["data_path"], "metric": metric,
            "model": manifest.get("model", ""), "tiling": manifest["tiling"],
            "self_ensemble": manifest["self_ensemble"], "images": len(rows),
            "psnr": float(np.mean([r["psnr"] for r in rows])) if rows else float("nan"),
            "ssim": float(np.mean([r["ssim"] for r in rows])) if rows else float("nan"), "rows": rows}


def run_stand_in(cfg: Config, manifest: dict, model: Path, pre_dir: Path, result_dir: Path) -> None:
    """Run the model over the tile files on this machine, as ascend310_infer/ does on a 310."""
    from src.inference import make_runner
    task = get_task(manifest["task"])
    setup_device(cfg, native_convs=model.suffix.lower() in EXPORTED_SUFFIXES)
    runner = make_runner(Config(cfg, tile_batch=int(manifest["tile_batch"])), task, model)
    files = run_bin_folder(runner, pre_dir, result_dir, (3, PATCH, PATCH), PATCH * task.scale)
    LOG.info("stand-in: %s ran %d tile batches into %s", model.name, len(files), result_dir)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--pre_path", default="preprocess_Result")
    parser.add_argument("--result_path", default="result_Files")
    parser.add_argument("--stand_in", default="")
    own, rest = parser.parse_known_args(argv)
    if any(a in ("-h", "--help") for a in rest):
        print(__doc__)
        return 0
    cfg = parse_cli(rest, description=__doc__)
    setup_logging(cfg.log_level)
    if cfg.metric not in ("y", "rgb"):
        fail(f"--metric must be y or rgb, not {cfg.metric}")
    if cfg.json and Path(cfg.json).exists() and not cfg.overwrite:
        fail(f"{cfg.json} exists; pass --overwrite to replace it")
    pre_dir, result_dir = Path(own.pre_path), Path(own.result_path)
    try:
        manifest = read_manifest(pre_dir)
        if own.stand_in:
            if result_dir.is_dir() and any(result_dir.glob("*.bin")) and not cfg.overwrite:
                fail(f"{result_dir} already holds outputs; pass --overwrite to replace them")
            run_stand_in(cfg, manifest, Path(own.stand_in), pre_dir, result_dir)
        elif not result_dir.is_dir():
            fail(f"result_path not found: {result_dir}")
        result = score(manifest, pre_dir, result_dir, cfg.metric)
    except (CheckpointError, ValueError) as err:
        fail(str(err))
    LOG.info("%s on %s (%d images, %s): PSNR %.3f dB  SSIM %.4f", result["task"],
             Path(result["data_path"]).name, result["images"], "Y" if cfg.metric == "y" else "RGB",
             result["psnr"], result["ssim"])
    report_result(result, cfg.json)
    return 0


if __name__ == "__main__":
    run_command(main)
