"""bench/compare_per_image.py: per-image wins and losses between two eval.py --json files."""
import json

import pytest
from tests.conftest import load_script


def _write(path, scores):
    path.write_text(json.dumps({"psnr_y": sum(scores.values()) / len(scores),
                                "rows": [{"name": n, "psnr_y": v} for n, v in scores.items()]}))
    return str(path)


def test_counts_wins_and_lists_the_worst(tmp_path, capsys):
    compare = load_script("bench/compare_per_image.py")
    old = _write(tmp_path / "old.json", {"a": 30.0, "b": 30.0, "c": 30.0})
    new = _write(tmp_path / "new.json", {"a": 31.0, "b": 29.0, "c": 32.0})
    assert compare.main([old, new, "--worst", "1"]) == 0
    out = capsys.readouterr().out
    assert "new better on 2 of 3 images" in out and "median +1.00" in out and "from -1.00 to +2.00" in out
    assert "b: 30.00 -> 29.00 (-1.00)" in out and "a: 30.00 -> 31.00 (+1.00)\n" not in out
    assert "at the median: a (30.00 -> 31.00, +1.00)\n" in out


def test_an_even_count_has_two_images_at_the_median(tmp_path, capsys):
    compare = load_script("bench/compare_per_image.py")
    old = _write(tmp_path / "old.json", {"a": 30.0, "b": 30.0, "c": 30.0, "d": 30.0})
    new = _write(tmp_path / "new.json", {"a": 34.0, "b": 29.0, "c": 31.0, "d": 32.0})
    assert compare.main([old, new, "--worst", "0"]) == 0
    out = capsys.readouterr().out
    assert "median +1.50" in out and "at the median: c (30.00 -> 31.00, +1.00), d (30.00 -> 32.00, +2.00)\n" in out


def test_refuses_files_of_different_images(tmp_path):
    compare = load_script("bench/compare_per_image.py")
    old = _write(tmp_path / "old.json", {"a": 30.0})
    new = _write(tmp_path / "new.json", {"z": 30.0})
    with pytest.raises(SystemExit, match="different images"):
        compare.main([old, new])
