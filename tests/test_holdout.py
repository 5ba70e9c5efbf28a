"""The held-out split: every training image on exactly one side, as links, kept up to date."""
from pathlib import Path

import pytest

from src.holdout import DEFAULT_HOLDOUT, split_folder
from src.image_io import list_images

TRAIN = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "train"


def _rel(folder: Path):
    return [p.relative_to(folder).as_posix() for p in list_images(folder)]


def test_default_split_of_the_shared_training_folder(tmp_path):
    train, val = split_folder(TRAIN, tmp_path / "data")
    assert _rel(val) == [Path(h).name for h in DEFAULT_HOLDOUT]
    source = _rel(TRAIN)
    assert sorted(_rel(train) + list(DEFAULT_HOLDOUT)) == sorted(source)
    assert all(p.is_symlink() and p.resolve() == (TRAIN / r).resolve()
               for p, r in zip(list_images(train), _rel(train)))
    split_folder(TRAIN, tmp_path / "data")  # again: nothing changes
    assert len(_rel(train)) == len(source) - len(DEFAULT_HOLDOUT)


def test_another_holdout_moves_links_and_bad_input_is_refused(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    for name in ("a/1.png", "a/2.png", "3.png"):
        (src / name).write_bytes(b"x")
    train, val = split_folder(src, tmp_path / "d", holdout=["a/1.png"])
    assert _rel(train) == ["3.png", "a/2.png"] and _rel(val) == ["1.png"]
    train, val = split_folder(src, tmp_path / "d", holdout=["3.png"])
    assert _rel(train) == ["a/1.png", "a/2.png"] and _rel(val) == ["3.png"]
    with pytest.raises(FileNotFoundError, match="held-out"):
        split_folder(src, tmp_path / "d", holdout=["nope.png"])
    with pytest.raises(ValueError, match="distinct"):
        (src / "b").mkdir()
        (src / "b" / "2.png").write_bytes(b"x")
        split_folder(src, tmp_path / "d", holdout=["a/2.png", "b/2.png"])
    (tmp_path / "e" / "val").mkdir(parents=True)
    (tmp_path / "e" / "val" / "3.png").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="not a link"):
        split_folder(src, tmp_path / "e", holdout=["3.png"])
