"""src/config.py + src/config_schema.py: every key declared, every bad value one line, at start-up."""
import re

import pytest
import yaml

from src.config import ConfigError, load_config
from src.config_schema import RUN_KEYS, SCHEMA, check_value, OptionError
from tests.conftest import ROOT


def test_schema_covers_exactly_the_default_config():
    defaults = yaml.safe_load((ROOT / "default_config.yaml").read_text())
    assert sorted(set(defaults) - set(SCHEMA)) == [], "keys without a declared type"
    assert sorted(set(SCHEMA) - set(defaults)) == [], "declared keys missing from default_config.yaml"
    for key, opt in SCHEMA.items():
        assert opt.kind in ("bool", "int", "float", "str", "task", "tasks", "pair") and opt.help, key


def test_every_key_the_code_reads_is_declared():
    dict_methods = {"get", "copy", "update", "setdefault", "items", "keys", "values", "pop"}
    files = [p for p in ROOT.glob("*.py")] + list((ROOT / "src").glob("*.py")) + \
        list((ROOT / "scripts").glob("*.py")) + list((ROOT / "bench").glob("*.py"))
    read = set()
    for path in files:
        text = path.read_text()
        read |= {(m, path.name) for m in re.findall(r"\bcfg\.(\w+)", text)}
        read |= {(m, path.name) for m in re.findall(r"\bcfg\[\"(\w+)\"\]", text)}
        read |= {(m, path.name) for m in re.findall(r"\bcfg\.get\(\"(\w+)\"", text)}
    undeclared = sorted((k, f) for k, f in read if k not in SCHEMA and k not in RUN_KEYS and k not in dict_methods)
    assert undeclared == []


def test_config_files_pass_the_schema():
    for name in (None, "ipt_tiny", "ipt_small_ref"):
        cfg = load_config(name)
        assert isinstance(cfg.lr_max, float) and isinstance(cfg.tile_batch, int)


@pytest.mark.parametrize("key, value, expected", [
    ("tile_batch", 0, "--tile_batch must be an integer with 1 <= value <= 4096, not 0"),
    ("tile_batch", -3, "--tile_batch must be an integer"),
    ("tile_batch", "abc", "--tile_batch must be an integer"),
    ("tile_batch", 2.5, "not 2.5"),
    ("tile_overlap", 48, "--tile_overlap must be an integer with 0 <= value < 48 or null, not 48"),
    ("tile_overlap", -1, "--tile_overlap must be"),
    ("threads", "abc", "--threads must be an integer"),
    ("lr_max", "abc", "--lr_max must be a number with 0 < value"),
    ("lr_max", -1, "--lr_max must be a number with 0 < value, not -1.0"),
    ("self_ensemble", "maybe", "--self_ensemble must be true or false, not 'maybe'"),
    ("out_format", "gif", "--out_format must be png, jpg, bmp, tiff, webp or same, not 'gif'"),
    ("task", "sr_x5", "--task: unknown task 'sr_x5'; choose from sr_x2, sr_x3"),
    ("task", ["sr_x2"], "--task must be one of sr_x2"),
    ("tasks", ["sr_x2", "sr_x2"], "--tasks repeats a task"),
    ("tasks", ["sr_x9"], "unknown task 'sr_x9'"),
    ("betas", [0.9], "--betas must be two numbers"),
    ("mode", "eager", "--mode must be GRAPH or PYNATIVE, not 'EAGER'"),
    ("steps", float("nan"), "--steps must be"),
])
def test_bad_values_are_one_line_naming_key_value_and_what_is_allowed(key, value, expected):
    with pytest.raises(OptionError) as err:
        check_value(key, value)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_good_values_are_normalised():
    assert check_value("lr_max", 1) == 1.0 and isinstance(check_value("lr_max", 1), float)
    assert check_value("lr_max", "1e-3") == 1e-3  # YAML reads 1e-3 as a string
    assert check_value("mode", "graph") == "GRAPH"
    assert check_value("file_format", "onnx") == "ONNX"
    assert check_value("tasks", "derain") == ["derain"]
    assert check_value("tile_overlap", None) is None
    assert check_value("ckpt", 2024) == "2024"


def test_cross_key_rules_and_unknown_keys():
    with pytest.raises(ConfigError, match="lr_min .* must not exceed --lr_max"):
        load_config(None, {"lr_max": 1e-5, "lr_min": 1e-4})
    load_config(None, {"lr_max": 1e-5, "lr_min": 1e-4, "lr_schedule": "constant"})  # lr_max unused there
    with pytest.raises(ConfigError, match="unknown option 'tile_batchh'"):
        load_config(None, {"tile_batchh": 4})
