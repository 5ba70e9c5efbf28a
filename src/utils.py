"""Small shared helpers: logging, device setup, one-line fatal errors, progress with ETA, atomic text files."""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import NoReturn, Optional, Union

LOG = logging.getLogger("ipt")


def shown_path(path: Union[str, "os.PathLike[str]"]) -> str:
    """A path as logged: the home folder as ``~``, so that logs kept with a run name no user's home."""
    text, home = str(path), os.path.expanduser("~")
    return "~" + text[len(home):] if home not in ("", "/") and text.startswith(home + os.sep) else text


def recorded_path(path: Union[str, "os.PathLike[str]"]) -> str:
    """A path as written into result files: relative to the current folder when it lies under the
    folder's parent (the benchmarks sit at ../shared/datasets), so that a committed JSON names no
    machine's folders; otherwise as logged (`shown_path`)."""
    full = os.path.abspath(path)
    try:
        rel = os.path.relpath(full)
    except ValueError:  # another drive (Windows)
        return shown_path(full)
    parts = rel.split(os.sep)
    return rel if parts.count(os.pardir) <= 1 else shown_path(full)


def publish(tmp, path) -> None:
    """Move a finished temporary file into place with the mode a new file gets (0644 at umask 022).

    mkstemp creates 0600 files and MindSpore writes checkpoints and exports 0400; os.replace keeps
    the temporary file's mode, so every writer ends through here.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def write_text_atomic(path, text: str) -> None:
    """Write a text file (results, reports) so that a crash mid-write leaves the previous version."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    publish(tmp, path)


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe_writable(folder: Path) -> Optional[str]:
    """None if a file can be created in `folder` (tried for real: root ignores mode bits, not
    read-only file systems), else why not."""
    import tempfile
    try:
        fd, name = tempfile.mkstemp(prefix=".ipt_write_check.", dir=folder)
        os.close(fd)
        os.unlink(name)
        return None
    except OSError as err:
        return err.strerror or type(err).__name__


def check_output_dir(path, option: str) -> None:
    """Fail in one line, before any work, unless `path` is (or can be made as) a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        fail(f"--{option} {path} is a file, not a folder")
    base = _existing_ancestor(path)
    if not base.is_dir():
        fail(f"--{option} {path}: {base} is a file, so the folder cannot be made")
    why = _probe_writable(base)
    if why:
        fail(f"--{option} {path}: cannot write in {base} ({why})")


def check_output_file(path, option: str, overwrite: bool) -> None:
    """Fail in one line, before any work, unless the file `path` can be written (and may be)."""
    path = Path(path)
    if path.is_dir():
        fail(f"--{option} {path} is a folder, not a file")
    if path.exists() and not overwrite:
        fail(f"{path} exists; pass --overwrite to replace it")
    check_output_dir(path.parent, option)


def _interrupted(signum, frame) -> NoReturn:
    raise KeyboardInterrupt


def run_command(main) -> NoReturn:
    """`sys.exit(main())` for the commands: Ctrl-C ends with one 'interrupted' line and exit 130.

    MindSpore's graph runs install a SIGINT handler that turns Ctrl-C into SIGTERM to the process
    itself (ccsrc/utils/signal_util.cc, re-registered on every run), so SIGTERM is handled as an
    interrupt too; it is acted on when the running graph call returns.
    """
    import signal
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        code = main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    raise SystemExit(code)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, str(level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def short_reason(err, limit: int = 300) -> str:
    """The first line of an exception's text, cut at a word boundary (library errors run long)."""
    lines = str(err).strip().splitlines()
    text = lines[0].strip() if lines else type(err).__name__
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[:cut if cut > limit // 2 else limit].rstrip(" ,;:") + " ..."


def fail(message: str, code: int = 2) -> NoReturn:
    """Stop a command with a one-line error (no traceback for a user's mistake)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


EXPORTED_SUFFIXES = (".mindir", ".onnx")  # exported files eval.py/restore.py run (MindSpore's own Conv2D)


def setup_device(cfg, native_convs: bool = False) -> None:
    """Set execution mode, device and CPU threads from the config, once per process; refuse a
    precision the device cannot run (bfloat16 on CPU) before MindSpore starts. `native_convs` (or a
    `--ckpt` that is an exported file) fixes MindSpore's own Conv2D for the process (src/conv.py);
    otherwise the first model built chooses."""
    from src.precision import PrecisionError, check_precision
    try:
        check_precision(cfg)
    except PrecisionError as err:
        fail(str(err))
    import mindspore as ms
    target = cfg.device_target
    ms.set_context(mode=ms.GRAPH_MODE if cfg.mode == "GRAPH" else ms.PYNATIVE_MODE)
    try:
        ms.set_device(target, cfg.device_id if target != "CPU" else None)
    except (RuntimeError, ValueError) as err:
        fail(f"cannot use device {target}: {short_reason(err)}")
    exported = str(getattr(cfg, "ckpt", None) or "").lower().endswith(EXPORTED_SUFFIXES)
    if native_convs or exported:  # else the first model built decides (src/conv.py)
        from src.conv import choose_formulation
        choose_formulation(target, 0.0, native=True)  # before the first kernel: oneDNN reads the cap once
    if target == "CPU":
        threads = cfg.threads or (os.cpu_count() or 1)
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


def _proc_status_mb(field: str) -> Optional[float]:
    """A memory field of /proc/self/status (VmHWM, VmRSS) in MiB, or None where /proc is missing."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def peak_rss_mb() -> Optional[float]:
    """This process's peak resident memory (VmHWM), or None where /proc is missing."""
    return _proc_status_mb("VmHWM")


def rss_mb() -> Optional[float]:
    """This process's current resident memory (VmRSS), or None where /proc is missing."""
    return _proc_status_mb("VmRSS")


def release_freed_memory() -> None:
    """Give the C heap's free pages back to the OS (glibc's malloc_trim; a no-op elsewhere).

    Compiling a graph frees hundreds of MB of intermediate IR that glibc keeps mapped; without this
    it stays resident next to the first run's tensors (IPT-base train step: 0.16 GB of its peak)."""
    import ctypes
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def write_json(path, obj) -> None:
    """Write a result file atomically (parent folders created)."""
    import json
    write_text_atomic(path, json.dumps(obj, indent=1))


def report_result(result: dict, json_path) -> None:
    """The closing lines of eval-like commands: the JSON file, then a one-line summary on stdout."""
    if json_path:
        write_json(json_path, result)
    print(f"{result['task']} {Path(result['data_path']).name} PSNR {result['psnr']:.2f} SSIM {result['ssim']:.4f}")


def fmt_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
