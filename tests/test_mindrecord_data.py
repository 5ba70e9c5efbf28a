"""MindRecord corpora: conversion (quirks, resume, refusals) and batches identical to the folder's."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from src.config import load_config
from src.dataset import build_train_source, create_train_dataset
from src.image_index import open_index
from src.mindrecord_data import MANIFEST, open_mindrecord, write_mindrecord
from src.tasks import PRETRAIN_ORDER

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """24 JPEG/PNG images in two sub-folders, plus a truncated JPEG and a text file named .jpg."""
    root = tmp_path_factory.mktemp("corpus")
    sources = sorted((DATA / "CBSD68").glob("*.png"))[:12]
    for i, path in enumerate(sources * 2):
        img = cv2.imread(str(path))[i % 3 * 20:, i % 5 * 10:]
        sub = root / f"class_{i % 2}"
        sub.mkdir(exist_ok=True)
        ext = ".jpg" if i % 3 else ".png"
        cv2.imwrite(str(sub / f"{i:03d}{ext}"), img)
    data = (root / "class_0" / "002.jpg").read_bytes()
    (root / "class_1" / "cut.jpg").write_bytes(data[: len(data) // 2])
    (root / "class_1" / "page.jpg").write_bytes(b"<html>gone</html>")
    return root


def _convert(folder, out, *extra):
    return subprocess.run([sys.executable, "scripts/make_mindrecord.py", "--train_path", str(folder),
                           "--out", str(out), "--shards", "3", "--workers", "1", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def _cfg(path, **kw):
    base = dict(train_path=str(path), batch_size=6, steps=30, seed=5, workers=2, crops_per_image=2)
    base.update(kw)
    return load_config("ipt_tiny", overrides=base)


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def records(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("mr") / "corpus_mr"
    proc = _convert(folder, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, proc


def test_conversion_keeps_every_good_image_and_logs_the_bad(folder, records):
    out, proc = records
    files, index = open_mindrecord(out)
    assert len(files) == 3 and len(index) == 24
    assert list(index.rel_paths()) == list(open_index(folder).rel_paths())
    assert "cut.jpg" in proc.stderr and "page.jpg" in proc.stderr
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["records"] == 24 and manifest["digest"] == index.digest


@pytest.mark.parametrize("rank,world,start", [(0, 1, 0), (1, 2, 4)])
def test_mindrecord_batches_equal_the_folder_batches(folder, records, rank, world, start):
    out, _ = records
    disk = build_train_source(_cfg(folder, data_source="stream"), PRETRAIN_ORDER, rank, world, start)
    cfg = _cfg(out, data_source="stream")
    mr = build_train_source(cfg, PRETRAIN_ORDER, rank, world, start)
    assert mr.kind == "mindrecord"
    dataset = create_train_dataset(cfg, PRETRAIN_ORDER, rank, world, start, source=mr)
    assert len(dataset.segments()) > 2  # 24 records: a new pipeline every few steps
    rows = list(create_train_dataset(cfg, PRETRAIN_ORDER, rank, world, start, source=mr)
                .create_tuple_iterator(num_epochs=1, output_numpy=True))
    assert len(rows) == 30 - start
    for i, row in enumerate(rows):
        assert _same(row, disk[i]), i


def test_small_mindrecord_corpus_is_read_into_ram(folder, records):
    out, _ = records
    ram_mr = build_train_source(_cfg(out), PRETRAIN_ORDER)
    ram_folder = build_train_source(_cfg(folder), PRETRAIN_ORDER)
    assert ram_mr.kind == ram_folder.kind == "ram"
    for step in range(5):
        assert _same(ram_mr.batch(step), ram_folder.batch(step))


def test_interrupted_conversion_continues_and_refusals(folder, records, tmp_path):
    out, _ = records
    again = _convert(folder, out)
    assert again.returncode == 2 and "pass --overwrite" in again.stderr.strip().splitlines()[-1]
    partial = tmp_path / "partial"
    write_mindrecord(open_index(folder), partial, shards=3, workers=1)
    (partial / MANIFEST).unlink()  # as if killed during the last shard
    (partial / "ipt_train-00002-of-00003.mindrecord.done").unlink()
    kept = (partial / "ipt_train-00000-of-00003.mindrecord").stat().st_mtime_ns
    resumed = _convert(folder, partial)
    assert resumed.returncode == 0 and "continuing the partial conversion" in resumed.stderr
    assert (partial / "ipt_train-00000-of-00003.mindrecord").stat().st_mtime_ns == kept  # not redone
    assert open_mindrecord(partial)[1].digest == open_mindrecord(out)[1].digest
    inside = _convert(folder, folder / "mr")
    assert inside.returncode == 2 and "must not be inside" in inside.stderr
    other = _convert(folder, partial, "--shards", "3")
    assert other.returncode == 2
    (partial / MANIFEST).unlink()
    wrong = subprocess.run([sys.executable, "scripts/make_mindrecord.py", "--train_path", str(folder),
                            "--out", str(partial), "--shards", "5"], cwd=ROOT, capture_output=True, text=True)
    assert wrong.returncode == 2 and "another --shards" in wrong.stderr
