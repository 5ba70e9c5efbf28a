"""Configuration: one yaml file, every key overridable from the command line.

`default_config.yaml` holds IPT-base and every option of every command. `--config FILE` replaces it
with another file (a bare name such as `ipt_tiny` means `configs/ipt_tiny.yaml`); a file may start
from another with `_base: OTHER.yaml`, so variants only list what differs. `--key value` then
overrides single keys; values are parsed as yaml (`--tasks [sr_x2,derain]`, `--overwrite true`).
Unknown keys are an error, so a typo never silently does nothing, and every value is checked
against its declaration in src/config_schema.py before anything else happens.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Iterable, Optional, Tuple

import yaml

from src.config_schema import OptionError, check_config
from src.tasks import Task, get_task
from src.utils import fail, setup_logging

LOG = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS_ROOT = REPO_ROOT.parent / "shared" / "datasets"  # the benchmarks, beside the repository
DEFAULT_CONFIG = REPO_ROOT / "default_config.yaml"
CONFIG_DIR = REPO_ROOT / "configs"


class ConfigError(ValueError):
    """A configuration file or command-line option that cannot be used."""


class Config(dict):
    """A dict whose keys are also attributes (`cfg.n_feats`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key '{name}'") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


def resolve_config_path(name: str) -> Path:
    """Accept a path, or a variant name from configs/ (with or without .yaml)."""
    for candidate in (Path(name), CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml", REPO_ROOT / name):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config '{name}' not found (neither a file nor a name in configs/)")


def _read_yaml(path: Path, seen: tuple = ()) -> dict:
    if path.resolve() in seen:
        raise ConfigError(f"config {path}: _base chain loops")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path}: not valid yaml ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: expected a mapping of keys to values")
    base = data.pop("_base", None)
    if base is None:
        return data
    base_path = (path.parent / base) if (path.parent / base).is_file() else resolve_config_path(base)
    merged = _read_yaml(base_path, seen + (path.resolve(),))
    merged.update(data)
    return merged


def load_config(path: Optional[str] = None, overrides: Optional[dict] = None) -> Config:
    """Read a config file (default: IPT-base) and apply overrides, checking every key exists."""
    cfg = Config(_read_yaml(resolve_config_path(path) if path else DEFAULT_CONFIG))
    defaults = _read_yaml(DEFAULT_CONFIG)
    for key, value in defaults.items():  # a variant file inherits keys it does not mention
        cfg.setdefault(key, value)
    for key, value in (overrides or {}).items():
        if key not in cfg:
            raise ConfigError(f"unknown option '{key}' (see default_config.yaml for the keys)")
        cfg[key] = value
    try:
        check_config(cfg)
    except OptionError as err:
        raise ConfigError(str(err)) from None
    cfg["config_path"] = str(path) if path else None
    cfg["overridden"] = sorted(overrides or {})
    return cfg


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_cli(argv: Optional[Iterable[str]] = None, description: str = "") -> Config:
    """`--config FILE` plus `--key value` pairs for any key of the config."""
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Any key of default_config.yaml can be given as --key value.")
    parser.add_argument("--config", default=None, help="config file or name in configs/")
    known, rest = parser.parse_known_args(list(argv) if argv is not None else None)
    overrides = {}
    i = 0
    while i < len(rest):
        arg = rest[i]
        if not arg.startswith("--") or len(arg) == 2:
            parser.error(f"unexpected argument '{arg}'")
        key = arg[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        elif i + 1 < len(rest) and not rest[i + 1].startswith("--"):
            value = rest[i + 1]
            i += 2
        else:  # a bare flag means true (`--baseline`, `--overwrite`)
            value = "true"
            i += 1
        overrides[key.replace("-", "_")] = _parse_value(value)
    try:
        return load_config(known.config, overrides)
    except ConfigError as err:
        fail(str(err))


def start_command(argv: Optional[Iterable[str]], description: str, need_data: bool = False) -> Tuple[Config, Task]:
    """Common start of the inference commands: parse the CLI, set up logging, check the task
    (and with `need_data` the benchmark folder, by default the task's standard one), so that every
    mistake is one line before any work; returns (cfg, task)."""
    cfg = parse_cli(argv, description=description)
    setup_logging(cfg.log_level)
    try:
        task = get_task(cfg.task)
    except ValueError as err:
        fail(str(err))
    if need_data:
        if cfg.data_path is None:
            cfg.data_path = str(DATASETS_ROOT / task.benchmark)
            LOG.debug("no --data_path: scoring %s on %s", task.name, cfg.data_path)
        if not Path(cfg.data_path).is_dir():
            fail(f"data_path not found: {cfg.data_path}")
    return cfg, task
