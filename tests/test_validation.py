"""--val_path parsing: which folder validates which task (no model needed)."""
from pathlib import Path

import pytest

from src.tasks import get_task
from src.validation import parse_val_path

TASKS = [get_task(n) for n in ("sr_x2", "denoise_30", "derain")]


def test_one_clean_folder_serves_every_task_derain_included(tmp_path):
    # derain on a clean folder is validated with synthetic rain (SyntheticRainBenchmark)
    assert parse_val_path(str(tmp_path), TASKS) == {t.name: tmp_path for t in TASKS}


def test_per_task_folders_and_default():
    assert parse_val_path("sr_x2=a, derain=b", TASKS) == {"sr_x2": Path("a"), "derain": Path("b")}
    default = parse_val_path("default", TASKS)
    assert default["sr_x2"].name == "CSet5" and default["derain"].name == "Rain100L"
    assert parse_val_path("", TASKS) == {}
    with pytest.raises(ValueError, match="names task 'sr_x5'"):
        parse_val_path("sr_x5=a", TASKS)
