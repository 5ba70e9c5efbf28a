"""MindRecord training corpora: convert a folder once (sharded), then train from the shards.

A converted corpus is a folder of independent single-shard files ``ipt_train-00000-of-00016.mindrecord``
(each with its ``.db``), written in index order, plus ``ipt_index.npz`` (the image sizes, as for a
folder) and ``ipt_mindrecord.json`` (the manifest). Each record keeps the image file's original
bytes (no re-encoding, so training sees the pixels a folder run sees), verified decodable at
conversion time: the training side never meets a bad file.

Training keeps the keyed design of ``src/dataset.py``: the image drawn for every (step, group) is
planned up front from the sizes alone, MindSpore's ``MindDataset`` reads exactly those records in
that order (``SubsetSampler``; C++ readers, parallel), and a multiprocess ``map`` decodes, crops
and degrades them with the same per-sample streams. So a MindRecord run gives the batches of a
folder run of the same images, bit for bit.
"""
from __future__ import annotations

import json
import logging
import os
import time
from multiprocessing import get_context
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import numpy as np

from src.image_index import ImageIndex
from src.image_io import ImageReadError, decode_image
from src.utils import Progress, write_text_atomic

LOG = logging.getLogger(__name__)

MANIFEST = "ipt_mindrecord.json"
INDEX_FILE = "ipt_index.npz"
SCHEMA = {"data": {"type": "bytes"}, "nbytes": {"type": "int64"}, "width": {"type": "int32"},
          "height": {"type": "int32"}}  # nbytes: batching pads byte strings to the longest
WRITE_ROWS = 256

PathLike = Union[str, os.PathLike]


def shard_name(k: int, n: int) -> str:
    return f"ipt_train-{k:05d}-of-{n:05d}.mindrecord"


def is_mindrecord_dir(path: PathLike) -> bool:
    return (Path(path) / MANIFEST).is_file()


def _read_verified(path: str) -> Union[Tuple[bytes, int, int], str]:
    """The file's bytes and decoded size, or why it cannot be used."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        img = decode_image(data, path)
    except ImageReadError as err:
        return err.reason
    except OSError as err:
        return err.strerror or type(err).__name__
    return data, int(img.shape[1]), int(img.shape[0])


def write_mindrecord(index: ImageIndex, out_dir: PathLike, shards: int = 16, workers: int = 2) -> dict:
    """Convert the indexed images into ``shards`` MindRecord files under ``out_dir``.

    Resumable: a shard is finished when its ``.done`` marker exists; a rerun keeps finished
    shards and rewrites the others. Undecodable images are logged and left out.
    """
    from mindspore.mindrecord import FileWriter

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(index)
    shards = max(1, min(int(shards), n))
    bounds = np.linspace(0, n, shards + 1).astype(np.int64)
    kept_rel: List[str] = []
    kept_size: List[Tuple[int, int]] = []
    skipped: List[str] = []
    progress = Progress(n, "converted", logger=LOG)
    start = time.perf_counter()
    with get_context("fork").Pool(max(1, workers)) as pool:
        for k in range(shards):
            lo, hi = int(bounds[k]), int(bounds[k + 1])
            name = shard_name(k, shards)
            done = out / (name + ".done")
            if done.is_file():  # finished by an earlier run: its record list is in the marker
                info = json.loads(done.read_text())
                kept_rel += info["rel_paths"]
                kept_size += [tuple(s) for s in info["sizes"]]
                skipped += info["skipped"]
                progress.update(hi)
                continue
            for stale in (out / name, out / (name + ".db")):
                stale.unlink(missing_ok=True)
            writer = FileWriter(str(out / name), shard_num=1, overwrite=True)
            writer.add_schema(SCHEMA, "ipt training images")
            rows, rel_paths, sizes, bad = [], [], [], []
            paths = [str(index.path(i)) for i in range(lo, hi)]
            for i, result in zip(range(lo, hi), pool.imap(_read_verified, paths, chunksize=16)):
                rel = index.rel_path(i)
                if isinstance(result, str):
                    LOG.warning("skipping %s: %s", index.path(i), result)
                    bad.append(f"{rel}: {result}")
                    continue
                data, width, height = result
                rows.append({"data": data, "nbytes": len(data), "width": width, "height": height})
                rel_paths.append(rel)
                sizes.append((width, height))
                if len(rows) == WRITE_ROWS:
                    writer.write_raw_data(rows)
                    rows = []
                if (i + 1) % 2048 == 0:
                    progress.update(i + 1)
            if rows:
                writer.write_raw_data(rows)
            writer.commit()
            write_text_atomic(done, json.dumps({"rel_paths": rel_paths, "sizes": sizes, "skipped": bad}))
            kept_rel += rel_paths
            kept_size += sizes
            skipped += bad
            progress.update(hi)
    records = ImageIndex.from_lists(index.root, kept_rel, kept_size, skipped=list(index.skipped) + skipped)
    records.save(out / INDEX_FILE)
    manifest = {"files": [shard_name(k, shards) for k in range(shards)], "records": len(kept_rel),
                "skipped": len(skipped), "source": str(index.root), "digest": records.digest}
    write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    LOG.info("wrote %d records in %d shards to %s in %.0f s (%d skipped)", len(kept_rel), shards, out,
             time.perf_counter() - start, len(skipped))
    return manifest


def open_mindrecord(path: PathLike) -> Tuple[List[str], ImageIndex]:
    """(shard files in record order, the records' index) of a converted corpus."""
    path = Path(path)
    manifest = json.loads((path / MANIFEST).read_text())
    files = [str(path / f) for f in manifest["files"]]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"{path}: MindRecord shard {missing[0]} is missing ({len(missing)} of "
                                f"{len(files)}); re-run scripts/make_mindrecord.py")
    index = ImageIndex.load(path / INDEX_FILE, path)
    if index.digest != manifest["digest"]:
        raise ValueError(f"{path}: {INDEX_FILE} does not match {MANIFEST}; re-run scripts/make_mindrecord.py")
    return files, index


def read_all(files: Sequence[str], index: ImageIndex) -> List[np.ndarray]:
    """Every record decoded, in order (the in-RAM mode for a small converted corpus)."""
    import mindspore.dataset as ds

    data = ds.MindDataset(list(files), columns_list=["data"], shuffle=False)
    images = [decode_image(row[0].tobytes(), index.rel_path(i))
              for i, row in enumerate(data.create_tuple_iterator(output_numpy=True, num_epochs=1))]
    if len(images) != len(index):
        raise ValueError(f"MindRecord holds {len(images)} records, its index {len(index)}")
    return images


class _StepNumbers:
    """The step of each batch, zipped with the records so the map knows its per-sample streams."""

    def __init__(self, first: int, last: int):
        self.first, self.last = first, last

    def __len__(self) -> int:
        return self.last - self.first

    def __getitem__(self, i: int):
        return (np.array(self.first + int(i), dtype=np.int64),)


class _DecodeAndCrop:
    """map operation: (the step's encoded images, step) -> (lr, hr, task) of TrainBatches.batch."""

    def __init__(self, batches):
        self.batches = batches

    def __call__(self, data, nbytes, step):
        buf, item = data.tobytes(), data.itemsize
        images = [decode_image(buf[k * item:k * item + int(n)]) for k, n in enumerate(nbytes)]
        return self.batches.batch(int(step), images=images)


MAX_SEGMENT_STEPS = 20000  # steps planned (and read by one MindDataset) at a time


def _segment_pipeline(batches, files: Sequence[str], first: int, last: int, workers: int, processes: bool):
    """One MindDataset pipeline for steps [first, last): its records in plan order, batched per
    step, zipped with the step numbers, decoded and cropped by a (multiprocess) map."""
    import mindspore.dataset as ds

    plan = [i for step in range(first, last) for i in batches.plan(step)]
    records = ds.MindDataset(list(files), columns_list=["data", "nbytes"], sampler=ds.SubsetSampler(plan),
                             num_parallel_workers=max(1, min(workers, 4))).batch(len(batches.groups))
    steps = ds.GeneratorDataset(_StepNumbers(first, last), column_names=["step"], shuffle=False)
    return ds.zip((records, steps)).map(
        operations=_DecodeAndCrop(batches), input_columns=["data", "nbytes", "step"],
        output_columns=["lr", "hr", "task"], num_parallel_workers=max(1, workers),
        python_multiprocessing=bool(processes))


class MindRecordBatches:
    """The batches of a TrainBatches over a MindRecord corpus, read through MindSpore pipelines.

    The plan is made a segment at a time (SubsetSampler takes at most one index per record, and
    planning a whole 300k-step run up front would take minutes): each segment is one pipeline,
    built when the previous one is used up. Same interface as a dataset for the training loop.
    """

    def __init__(self, batches, files: Sequence[str], workers: int, processes: bool = True):
        self.batches, self.files = batches, list(files)
        self.workers, self.processes = workers, processes
        per_step = max(1, len(batches.groups))
        self.segment = max(1, min(MAX_SEGMENT_STEPS, len(batches.source.store) // per_step))

    def get_col_names(self) -> List[str]:
        return ["lr", "hr", "task"]

    def segments(self) -> List[Tuple[int, int]]:
        first, last = self.batches.start_step, self.batches.steps
        return [(a, min(a + self.segment, last)) for a in range(first, last, self.segment)]

    def create_tuple_iterator(self, num_epochs: int = 1, output_numpy: bool = True):
        for first, last in self.segments():
            pipeline = _segment_pipeline(self.batches, self.files, first, last, self.workers, self.processes)
            rows = pipeline.create_tuple_iterator(num_epochs=1, output_numpy=output_numpy)
            try:
                yield from rows
            finally:
                rows.stop()  # the workers of a segment end with it (also when the loop stops early)


def mindrecord_dataset(batches, files: Sequence[str], workers: int, processes: bool = True) -> MindRecordBatches:
    """The batches of ``batches`` (a TrainBatches over the records' sizes), read from MindRecord."""
    return MindRecordBatches(batches, files, workers, processes)


__all__ = ["write_mindrecord", "open_mindrecord", "is_mindrecord_dir", "read_all", "mindrecord_dataset",
           "MindRecordBatches", "shard_name", "MANIFEST", "INDEX_FILE"]
