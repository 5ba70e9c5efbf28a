"""Small shared helpers: logging, device setup, one-line fatal errors, progress with ETA, atomic text files."""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import NoReturn, Optional

LOG = logging.getLogger("ipt")


def write_text_atomic(path, text: str) -> None:
    """Write a text file (results, reports) so that a crash mid-write leaves the previous version."""
    from pathlib import Path
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, str(level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def fail(message: str, code: int = 2) -> NoReturn:
    """Stop a command with a one-line error (no traceback for a user's mistake)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def start_command(argv, description: str, need_data: bool = False):
    """Common start of the inference commands: parse the CLI, set up logging, check the task
    and the enumerated options; returns (cfg, task). Errors are one line."""
    from pathlib import Path
    from src.config import parse_cli
    from src.tasks import get_task
    cfg = parse_cli(argv, description=description)
    setup_logging(cfg.log_level)
    try:
        task = get_task(cfg.task)
    except ValueError as err:
        fail(str(err))
    for key, allowed in (("metric", ("y", "rgb")), ("tiling", ("fast", "exact"))):
        if cfg[key] not in allowed:
            fail(f"--{key} must be {' or '.join(allowed)}, not {cfg[key]}")
    if need_data and not Path(cfg.data_path).is_dir():
        fail(f"data_path not found: {cfg.data_path}")
    return cfg, task


def setup_device(cfg) -> None:
    """Set execution mode, device and CPU threads from the config, once per process."""
    import mindspore as ms
    mode = {"GRAPH": ms.GRAPH_MODE, "PYNATIVE": ms.PYNATIVE_MODE}.get(str(cfg.mode).upper())
    if mode is None:
        fail(f"mode must be GRAPH or PYNATIVE, not {cfg.mode}")
    target = str(cfg.device_target)
    if target not in ("CPU", "GPU", "Ascend"):
        fail(f"device_target must be CPU, GPU or Ascend, not {target}")
    ms.set_context(mode=mode)
    try:
        ms.set_device(target, int(cfg.device_id) if target != "CPU" else None)
    except (RuntimeError, ValueError) as err:
        fail(f"cannot use device {target}: {str(err).strip().splitlines()[0]}")
    if target == "CPU":
        from src.cpu_isa import cap_onednn_isa
        cap_onednn_isa(target)  # before the first CPU kernel: oneDNN reads it once
        threads = int(cfg.threads) or (os.cpu_count() or 1)
        try:
            ms.device_context.cpu.op_tuning.threads_num(threads)
        except RuntimeError:  # already set in this process
            pass


class Progress:
    """Logs 'done/total, rate, ETA' at most every `every` seconds (and at the end)."""

    def __init__(self, total: int, label: str, every: float = 5.0, logger: Optional[logging.Logger] = None):
        self.total, self.label, self.every = max(int(total), 1), label, every
        self.start = self.last = time.perf_counter()
        self.log = logger or LOG

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if done < self.total and now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.start
        eta = elapsed / max(done, 1) * (self.total - done)
        self.log.info("%s %d/%d (%.0f%%) elapsed %s ETA %s", self.label, done, self.total,
                      100.0 * done / self.total, fmt_seconds(elapsed), fmt_seconds(eta))


def peak_rss_mb() -> Optional[float]:
    """This process's peak resident memory (VmHWM), or None where /proc is missing."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def write_json(path, obj) -> None:
    """Write a result file (parent folders created)."""
    import json
    from pathlib import Path
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=1))


def report_result(result: dict, json_path) -> None:
    """The closing lines of eval-like commands: the JSON file, then a one-line summary on stdout."""
    from pathlib import Path
    if json_path:
        write_json(json_path, result)
    print(f"{result['task']} {Path(result['data_path']).name} PSNR {result['psnr']:.2f} SSIM {result['ssim']:.4f}")


def fmt_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
