"""Training batches: shapes, determinism per (seed, step), rank slicing, resume, odd files, pairs."""
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from src.config import load_config
from src.dataset import TrainBatches, build_train_source, create_train_dataset
from src.train_sources import PairFolder, SyntheticPairs
from src.image_store import FolderImages, RamImages, load_image_folder
from src.degradations import add_rain, bicubic_downsample, modcrop
from src.tasks import PRETRAIN_ORDER, get_tasks

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
TRAIN = DATA / "train"
TASKS = get_tasks(PRETRAIN_ORDER)


@pytest.fixture(scope="module")
def train_images():
    return load_image_folder(TRAIN, min_size=48)


def _cfg(**overrides):
    base = dict(train_path=str(TRAIN), batch_size=4, steps=40, seed=7, workers=2, train_mode="pretrain")
    base.update(overrides)
    return load_config("ipt_tiny", overrides=base)


def _batches(images, **kw):
    args = dict(batch_size=4, steps=40, seed=7)
    args.update(kw)
    return TrainBatches(SyntheticPairs(images), TASKS, **args)


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_load_train_folder_keeps_small_images_for_tasks_that_fit(train_images):
    assert len(train_images) == 191  # 91 T91 + 100 DIV2K crops, none below 48 px
    assert all(im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3 for im in train_images.images)
    src = SyntheticPairs(train_images)
    counts = {t.name: len(src.eligible(t)) for t in TASKS}
    assert counts["denoise_30"] == 191 and 0 < counts["sr_x4"] < counts["sr_x2"] < 191


@pytest.mark.parametrize("name", PRETRAIN_ORDER)
def test_batch_shapes_dtypes_and_slot_for_each_task(train_images, name):
    (task,) = get_tasks([name])
    src = _batches(train_images, active=[task])
    lr, hr, slot = src[0]
    s = task.scale
    assert lr.shape == (4, 3, 48, 48) and hr.shape == (4, 3, 48 * s, 48 * s)
    assert lr.dtype == hr.dtype == np.float32
    assert slot.dtype == np.int32 and slot.shape == () and int(slot) == PRETRAIN_ORDER.index(name)
    assert 0 <= lr.min() and lr.max() <= 255 and 0 <= hr.min() and hr.max() <= 255
    assert hr.max() > 1.5  # 0..255 scale, not normalised
    if task.kind == "sr":  # LR is the MATLAB bicubic downsampling of the HR crop
        hr0 = hr[0].transpose(1, 2, 0).astype(np.uint8)
        assert np.array_equal(bicubic_downsample(hr0, s), lr[0].transpose(1, 2, 0))
    elif task.kind == "denoise":  # float noise, clipped, unrounded
        assert not np.array_equal(lr, np.round(lr))
        assert 0.7 * task.sigma < np.std(lr - hr) < 1.1 * task.sigma
    else:  # additive rain only brightens
        assert (lr >= hr).all() and (lr > hr).any()


def test_same_seed_and_step_give_identical_batches(train_images):
    a, b = _batches(train_images), _batches(list(train_images.images))
    for step in (0, 5, 33):
        assert _same(a.batch(step), b.batch(step))
    other = _batches(train_images, seed=8)
    assert not _same(a.batch(0), other.batch(0))
    lr, hr, _ = a.batch(3)
    assert not np.array_equal(hr[0], hr[1])  # samples of one batch differ


def test_two_ranks_concatenated_equal_one_process(train_images):
    whole = _batches(train_images)
    ranks = [_batches(train_images, rank=r, world_size=2) for r in range(2)]
    for step in range(6):
        full = whole.batch(step)
        parts = [r.batch(step) for r in ranks]
        assert parts[0][0].shape[0] == 2
        assert np.array_equal(np.concatenate([p[0] for p in parts]), full[0])
        assert np.array_equal(np.concatenate([p[1] for p in parts]), full[1])
        assert int(parts[0][2]) == int(parts[1][2]) == int(full[2])


def test_resume_yields_the_uninterrupted_batches(train_images):
    full = _batches(train_images, steps=12)
    resumed = _batches(train_images, steps=12, start_step=7)
    assert len(full) == 12 and len(resumed) == 5
    for i in range(len(resumed)):
        assert _same(resumed[i], full[7 + i])
    with pytest.raises(IndexError):
        resumed[5]


def test_every_task_appears_in_pretrain_mode(train_images):
    src = _batches(train_images, steps=200)
    seen = {src.task_of(step) for step in range(60)}
    assert seen == set(range(len(TASKS)))


def test_bad_settings_are_rejected(train_images):
    with pytest.raises(ValueError, match="batch_size"):
        _batches(train_images, batch_size=1)
    with pytest.raises(ValueError, match="divisible"):
        _batches(train_images, batch_size=6, world_size=4, rank=0)
    with pytest.raises(ValueError, match="task list"):
        TrainBatches(SyntheticPairs(train_images), TASKS[:2], 4, 10, 0, active=TASKS[3:4])
    tiny = [np.zeros((100, 100, 3), np.uint8)]
    with pytest.raises(ValueError, match="large enough"):
        TrainBatches(SyntheticPairs(tiny), TASKS, 4, 10, 0)


def test_gray_alpha_16bit_and_corrupt_files(tmp_path, caplog):
    bgr = cv2.imread(str(DATA / "CSet5" / "baby.png"))[:200, :220]
    sub = tmp_path / "nested"
    sub.mkdir()
    cv2.imwrite(str(tmp_path / "gray.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(tmp_path / "alpha.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(sub / "deep.tif"), bgr.astype(np.uint16) * 257)
    cv2.imwrite(str(sub / "plain.jpg"), bgr)
    cv2.imwrite(str(tmp_path / "small.bmp"), bgr[:30, :30])
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (tmp_path / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING):
        store = load_image_folder(tmp_path, min_size=48)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "broken.png" in warnings[0] and "\n" not in warnings[0]
    assert len(store) == 5 and store.images[store.names.index("small.bmp")] is None  # kept, never drawn
    images = [im for im in store.images if im is not None]
    assert len(images) == 4 and all(im.shape == (200, 220, 3) and im.dtype == np.uint8 for im in images)
    rgb = bgr[:, :, ::-1]
    gray = [im for im in images if np.array_equal(im[..., 0], im[..., 1])]
    colour = [im for im in images if not np.array_equal(im[..., 0], im[..., 1])]
    assert len(gray) == 1 and np.array_equal(gray[0][..., 0], gray[0][..., 2])  # replicated
    for im in colour:  # alpha dropped, 16-bit scaled back, jpeg close
        assert np.abs(im.astype(int) - rgb).mean() < 3
    lr, hr, _ = TrainBatches(SyntheticPairs(images), TASKS, 2, 4, 0, active=TASKS[:1])[0]
    assert hr.shape == (2, 3, 96, 96)


def _write(path: Path, rgb: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))


@pytest.mark.parametrize("scale", [2, 3])
def test_lr_hr_pairs_are_cropped_aligned(tmp_path, scale):
    names = ["baby", "butterfly"]
    for i, name in enumerate(names):
        hr = modcrop(cv2.imread(str(DATA / "CSet5" / f"{name}.png"))[:, :, ::-1], scale)
        _write(tmp_path / "HR" / f"{i:04d}.png", hr)
        _write(tmp_path / "LR" / f"X{scale}" / f"{i:04d}x{scale}.png", bicubic_downsample(hr, scale))
    _write(tmp_path / "LR" / f"X{scale}" / "orphan.png", np.zeros((60, 60, 3), np.uint8))
    folder = PairFolder(tmp_path, f"sr_x{scale}")
    assert len(folder.pairs) == 2
    (task,) = get_tasks([f"sr_x{scale}"])
    src = TrainBatches(folder, TASKS, 4, 10, 3, active=[task])
    lr, hr, slot = src[0]
    assert lr.shape == (4, 3, 48, 48) and hr.shape == (4, 3, 48 * scale, 48 * scale)
    assert int(slot) == TASKS.index(task)
    for j in range(4):
        down = bicubic_downsample(hr[j].transpose(1, 2, 0).astype(np.uint8), scale).astype(np.float32)
        ref = lr[j].transpose(1, 2, 0)
        inner = np.s_[4:-4, 4:-4]  # borders differ: the crop's own mirror padding
        assert np.abs(down[inner] - ref[inner]).max() <= 1.0
        shifted = np.abs(down[5:-3, 4:-4] - ref[inner]).mean()
        assert shifted > 3 * np.abs(down[inner] - ref[inner]).mean() + 0.5  # the check can fail


def test_rainy_norain_pairs_and_finetune_config(tmp_path):
    clean = cv2.imread(str(DATA / "CSet5" / "head.png"))[:, :, ::-1]
    for i in range(2):
        _write(tmp_path / "norain" / f"norain-{i}.png", clean)
        _write(tmp_path / "rainy" / f"rain-{i}.png", add_rain(clean, seed=i))
    cfg = _cfg(train_mode="finetune", task="derain", train_path=str(tmp_path), batch_size=2)
    src = build_train_source(cfg, PRETRAIN_ORDER)
    assert isinstance(src.source, PairFolder) and len(src.source.pairs) == 2
    for step in range(3):
        lr, hr, slot = src.batch(step)
        assert int(slot) == PRETRAIN_ORDER.index("derain") and lr.shape == hr.shape == (2, 3, 48, 48)
        assert (lr >= hr).all() and (lr == hr).mean() > 0.3  # aligned: rain only adds brightness


def test_finetune_synthetic_uses_one_task(train_images):
    src = build_train_source(_cfg(train_mode="finetune", task="sr_x3", steps=20), PRETRAIN_ORDER)
    assert isinstance(src.source, SyntheticPairs)
    assert {int(src.batch(s)[2]) for s in range(10)} == {PRETRAIN_ORDER.index("sr_x3")}


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_generator_dataset_with_two_workers_delivers_batches_in_step_order(processes):
    cfg = _cfg(steps=6, workers=2)
    source = build_train_source(cfg, PRETRAIN_ORDER, start_step=2)
    dataset = create_train_dataset(cfg, PRETRAIN_ORDER, start_step=2, processes=processes,
                                   source=source)
    assert dataset.get_col_names() == ["lr", "hr", "task"]
    rows = list(dataset.create_tuple_iterator(num_epochs=1, output_numpy=True))
    assert len(rows) == 4
    for i, row in enumerate(rows):
        assert _same(row, source[i])


# ----------------------------------------------------------------------------- streamed source


def _stream_cfg(root, **kw):
    return _cfg(train_path=str(root), data_source="stream", **kw)


@pytest.mark.parametrize("crops", [1, 3])
def test_streamed_and_in_ram_sources_give_identical_batches(crops):
    """Same seed and folder: decoding per sample from disk gives the batches of the RAM copy,
    also for a data-parallel rank and a resumed start."""
    for rank, world, start in ((0, 1, 0), (1, 2, 5)):
        ram = build_train_source(_cfg(data_source="ram", crops_per_image=crops), PRETRAIN_ORDER,
                                 rank=rank, world_size=world, start_step=start)
        disk = build_train_source(_cfg(data_source="stream", crops_per_image=crops), PRETRAIN_ORDER,
                                  rank=rank, world_size=world, start_step=start)
        assert ram.kind == "ram" and disk.kind == "stream"
        assert isinstance(disk.source.store, FolderImages) and isinstance(ram.source.store, RamImages)
        for i in range(8):
            assert _same(ram[i], disk[i]), (rank, i)


def test_crops_of_a_group_share_one_decoded_image_and_ranks_still_concatenate(train_images):
    whole = _batches(train_images, batch_size=6, crops_per_image=3)
    ranks = [_batches(train_images, batch_size=6, crops_per_image=3, rank=r, world_size=3) for r in range(3)]
    calls = []
    store = RamImages(train_images.images)
    whole.source.store = store
    store_get = store.get
    store.get = lambda i: calls.append(i) or store_get(i)
    for step in range(4):
        full = whole.batch(step)
        parts = [r.batch(step) for r in ranks]  # rank slices of 2 straddle the groups of 3
        assert np.array_equal(np.concatenate([p[1] for p in parts]), full[1])
        assert not np.array_equal(full[1][0], full[1][1])  # crops of one image still differ
    assert len(calls) == 4 * 2  # two groups per step: one decode each


def test_undecodable_image_is_redrawn_the_same_way_from_ram_and_disk(tmp_path, caplog):
    rgb = cv2.imread(str(DATA / "CSet5" / "baby.png"))
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"{i}.png"), rgb[i * 50:i * 50 + 200, :200])
    good = (tmp_path / "3.png").read_bytes()
    (tmp_path / "3.png").write_bytes(good[:200])  # header fine (indexed), pixel data cut off
    with caplog.at_level(logging.WARNING):
        ram = build_train_source(_cfg(train_path=str(tmp_path), data_source="ram", crops_per_image=2),
                                 PRETRAIN_ORDER)
        disk = build_train_source(_stream_cfg(tmp_path, crops_per_image=2), PRETRAIN_ORDER)
        for i in range(12):
            assert _same(ram[i], disk[i])
    assert sum("3.png" in r.getMessage() for r in caplog.records) == 2  # once per store
    assert any(3 in b.source._warned for b in (disk,))  # it was drawn, and replaced


def test_real_rain_streak_maps(tmp_path):
    streaks = tmp_path / "streaks"
    streaks.mkdir()
    layer = np.zeros((40, 30, 3), np.uint8)
    layer[:, ::5] = 90  # vertical streaks, smaller than the 48 px patch: scaled up to cover it
    cv2.imwrite(str(streaks / "rainstreak-1.png"), layer)
    src = build_train_source(_cfg(train_mode="finetune", task="derain", rain_streaks=str(streaks)),
                             PRETRAIN_ORDER)
    lr, hr, _ = src.batch(0)
    added = lr - hr
    assert (added >= 0).all() and (added > 0).mean() > 0.05
    assert (np.diff(added, axis=2) == 0).mean() > 0.8  # the drawn map's vertical streaks
    again = build_train_source(_cfg(train_mode="finetune", task="derain", rain_streaks=str(streaks)),
                               PRETRAIN_ORDER)
    assert _same(src.batch(0), again.batch(0))


def test_auto_source_uses_ram_under_the_limit_and_streams_above(tmp_path):
    assert build_train_source(_cfg(), PRETRAIN_ORDER).kind == "ram"  # 191 images, ~20 MB
    small = build_train_source(_cfg(ram_limit_mb=1), PRETRAIN_ORDER)
    assert small.kind == "stream" and small.crops_per_image == 4
