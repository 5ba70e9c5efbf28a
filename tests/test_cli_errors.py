"""The commands as a careless user runs them: one line, no traceback, nothing lost or changed.

Each case runs the real command line in a subprocess and checks the exit code, that no
"Traceback" appears, that the error is a single line naming the cause, and that the files that
existed before are untouched. Errors that can be found before a model loads must print nothing
else (a model load logs lines of its own).
"""
import hashlib
import os
import signal
import struct
import subprocess
import sys
import threading
import zlib

import cv2
import numpy as np
import pytest

from tests.conftest import DATASETS, ROOT, run_cli

BIRD = DATASETS / "CSet5" / "bird.png"


def _snapshot(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def _one_line_error(proc, *words, code=2):
    """Exit code, no traceback, exactly one non-empty stderr line, naming every word."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def _png_header_only(path, width, height):
    """A PNG that declares width x height (IHDR) with no pixel data: sized, never decodable."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(  # noqa: E731
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("args, words", [
    (["--tile_batch", "0"], ["--tile_batch", "0", "1 <= value"]),
    (["--tile_batch", "abc"], ["--tile_batch", "'abc'"]),
    (["--tile_batch", "2.5"], ["--tile_batch", "2.5"]),
    (["--tile_overlap", "48"], ["--tile_overlap", "48"]),
    (["--tile_overlap", "-1"], ["--tile_overlap", "-1"]),
    (["--threads", "abc"], ["--threads", "'abc'"]),
    (["--self_ensemble", "maybe"], ["--self_ensemble", "maybe", "true or false"]),
    (["--out_format", "gif"], ["--out_format", "gif", "png"]),
    (["--task", "sr_x5"], ["--task", "sr_x5"]),
    (["--tile_batchh", "4"], ["unknown option 'tile_batchh'"]),
])
def test_restore_bad_option_values(tmp_path, args, words):
    proc = run_cli("restore.py", "--input", BIRD, "--output", tmp_path / "out", *args)
    _one_line_error(proc, *words)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("script, args, words", [
    ("train.py", ["--lr_max", "-1"], ["--lr_max", "-1"]),
    ("train.py", ["--lr_max", "abc"], ["--lr_max", "'abc'"]),
    ("eval.py", ["--metric", "Y2"], ["--metric", "Y2"]),
    ("export.py", ["--file_format", "tflite"], ["--file_format", "TFLITE"]),
])
def test_other_commands_check_values_at_start(tmp_path, script, args, words):
    _one_line_error(run_cli(script, "--out_dir", tmp_path / "run", *args) if script == "train.py"
                    else run_cli(script, *args), *words)
    assert not (tmp_path / "run").exists()


def test_huge_image_is_refused_fast_with_little_memory(tmp_path):
    """30000x30000 (a 1 KB file here): refused from its header, before decoding or a model load."""
    big = _png_header_only(tmp_path / "huge.png", 30000, 30000)
    code = ("import resource, subprocess, sys, time; t = time.time(); "
            "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "print(time.time() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
            "sys.stderr.write(r.stderr); sys.exit(r.returncode)")
    proc = subprocess.run([sys.executable, "-c", code, sys.executable, "restore.py", "--task", "sr_x4",
                           "--input", big, "--output", tmp_path / "out"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    line = _one_line_error(proc, "huge.png", "30000x30000", "GB of memory", "tiles", "--max_megapixels")
    seconds, peak_kb = proc.stdout.split()
    assert float(seconds) < 5.0 and int(peak_kb) < 500 * 1024, (seconds, peak_kb, line)
    assert not (tmp_path / "out").exists()


def test_two_inputs_one_output_name_is_refused_before_any_work(tmp_path):
    src = cv2.imread(str(BIRD))
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "x.png"), src)
    cv2.imwrite(str(tmp_path / "in" / "x.jpg"), src)
    (tmp_path / "out").mkdir()
    before = _snapshot(tmp_path)
    proc = run_cli("restore.py", "--input", tmp_path / "in", "--output", tmp_path / "out", "--overwrite")
    _one_line_error(proc, "x.png", "x.jpg", "both")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("script, args, option", [
    ("restore.py", ["--input", BIRD, "--output", "{file}/out"], "--output"),
    ("eval.py", ["--baseline", "--json", "{file}/r.json"], "--json"),
    ("eval.py", ["--baseline", "--save_dir", "{file}/imgs"], "--save_dir"),
    ("export.py", ["--config", "ipt_tiny", "--file_name", "{file}/m"], "--file_name"),
    ("convert.py", ["--src", "x.pt", "--dst", "{file}/m.ckpt"], "--dst"),
    ("train.py", ["--config", "ipt_tiny", "--out_dir", "{file}/run"], "--out_dir"),
])
def test_impossible_outputs_fail_at_start(tmp_path, script, args, option):
    blocker = tmp_path / "afile"
    blocker.write_text("in the way")
    proc = run_cli(script, *[str(a).replace("{file}", str(blocker)) for a in args])
    _one_line_error(proc, option, "afile")
    assert blocker.read_text() == "in the way"


def test_unwritable_json_folder_fails_before_evaluating(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        if os.access(ro, os.W_OK) and os.geteuid() == 0:
            # root writes anywhere: a read-only bind is not available here, so use /proc instead
            target = "/proc/ipt_results.json"
        else:
            target = str(ro / "r.json")
        proc = run_cli("eval.py", "--task", "sr_x2", "--baseline", "--json", target)
        _one_line_error(proc, "--json", "cannot write")
        assert "PSNR" not in proc.stdout
    finally:
        os.chmod(ro, 0o755)


def test_failed_train_start_leaves_nothing_behind(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("train.py", "--config", "ipt_tiny", "--train_path", tmp_path / "nope", "--out_dir", out)
    _one_line_error(proc, "train_path", "nope")
    assert not out.exists()


def test_outputs_are_0644_and_eval_rows_are_kept_as_they_come(tmp_path, tiny_ckpt):
    old = os.umask(0o022)
    try:
        proc = run_cli("restore.py", "--config", "ipt_tiny", "--task", "sr_x2", "--ckpt", tiny_ckpt,
                       "--input", BIRD, "--output", tmp_path / "out")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert oct((tmp_path / "out" / "bird.png").stat().st_mode & 0o777) == "0o644"
        proc = run_cli("eval.py", "--task", "sr_x2", "--baseline", "--json", tmp_path / "r.json")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert oct((tmp_path / "r.json").stat().st_mode & 0o777) == "0o644"
        import json
        result = json.loads((tmp_path / "r.json").read_text())
        assert result["complete"] and len(result["rows"]) == 5
        proc = run_cli("export.py", "--config", "ipt_tiny", "--ckpt", tiny_ckpt, "--task", "sr_x2",
                       "--file_name", tmp_path / "m")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert oct((tmp_path / "m.mindir").stat().st_mode & 0o777) == "0o644"
    finally:
        os.umask(old)
    assert oct(tiny_ckpt.stat().st_mode & 0o777) == "0o644"


def test_eval_derain_alone_scores_rain100l():
    proc = run_cli("eval.py", "--task", "derain", "--baseline")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "derain Rain100L PSNR 26.90" in proc.stdout
    assert "(100 images" in proc.stderr


def test_webp_and_gray_alpha_inputs(tmp_path, tiny_ckpt):
    src = cv2.imread(str(BIRD))[:60, :50]
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "photo.webp"), src)
    gray = cv2.cvtColor(src, cv2.COLOR_BGR2GRAY)
    raw = b"".join(b"\x00" + np.stack([row, np.full_like(row, 255)], 1).tobytes() for row in gray)
    ihdr = struct.pack(">IIBBBBB", 50, 60, 8, 4, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(  # noqa: E731
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    (tmp_path / "in" / "ga.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                                             + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    proc = run_cli("restore.py", "--config", "ipt_tiny", "--task", "denoise_30", "--ckpt", tiny_ckpt,
                   "--input", tmp_path / "in", "--output", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert cv2.imread(str(tmp_path / "out" / "photo.png"), cv2.IMREAD_UNCHANGED).shape == (60, 50, 3)
    assert cv2.imread(str(tmp_path / "out" / "ga.png"), cv2.IMREAD_UNCHANGED).shape == (60, 50)
    assert "notes.txt" in proc.stderr and "not images" in proc.stderr


def test_ctrl_c_ends_with_one_line_and_130(tmp_path, tiny_ckpt):
    # Large enough that the first progress line (after 5 s of tiles) comes well before the end on a
    # fast CPU; the signal goes out when that line is seen, not after a fixed sleep.
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.random.default_rng(0).integers(0, 255, (1800, 2400, 3), np.uint8))
    proc = subprocess.Popen([sys.executable, "restore.py", "--config", "ipt_tiny", "--task", "sr_x2",
                             "--ckpt", tiny_ckpt, "--input", big, "--output", tmp_path / "out"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    watchdog = threading.Timer(300, proc.kill)  # no progress line in 5 minutes: fail, do not hang
    watchdog.start()
    try:
        for line in proc.stderr:
            seen.append(line)
            if "big.png tiles" in line:
                break
    finally:
        watchdog.cancel()
    assert proc.poll() is None, "no progress line before the end or the deadline:\n" + "".join(seen)[-2000:]
    proc.send_signal(signal.SIGINT)
    err = "".join(seen) + proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted"
    assert not (tmp_path / "out" / "big.png").exists()


def test_resume_cleans_the_temp_file_of_a_killed_save(tmp_path):
    out = tmp_path / "run"
    common = ["--config", "ipt_tiny", "--train_mode", "finetune", "--task", "sr_x2", "--batch_size", 2,
              "--train_path", DATASETS / "train" / "DIV2K_crop256", "--log_every", 1, "--save_every", 1,
              "--out_dir", out]
    proc = run_cli("train.py", *common, "--steps", 1)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stale = out / ".ipt_step00000002.tmp4242.ckpt"
    stale.write_bytes(b"half a checkpoint")
    proc = run_cli("train.py", *common, "--steps", 2, "--resume", "true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not stale.exists() and "removed 1 unfinished checkpoint file" in proc.stderr
    assert (out / "ipt_step00000002.ckpt").is_file()


def test_a_tiff_is_sized_after_decoding_and_skipped_when_too_large(tmp_path, tiny_ckpt):
    tif = tmp_path / "scan.tif"
    cv2.imwrite(str(tif), cv2.imread(str(BIRD))[:100, :100])
    proc = run_cli("restore.py", "--config", "ipt_tiny", "--task", "sr_x2", "--ckpt", tiny_ckpt, "--input", tif,
                   "--output", tmp_path / "out", "--max_megapixels", 0.005)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "scan.tif is 100x100" in proc.stderr and "--max_megapixels" in proc.stderr
    assert not (tmp_path / "out" / "scan.png").exists()
