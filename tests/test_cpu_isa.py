"""src/cpu_isa.py: the oneDNN ISA cap is set only where it helps, and in time for every command."""
import os
import subprocess
import sys

import pytest

from src.cpu_isa import CAP, cap_onednn_isa, cpu_flags, isa_summary
from tests.conftest import DATASETS, ROOT

AVX512 = {"avx2", "avx512f", "avx512bw", "avx512vl"}


def test_cap_on_avx512_cpu_for_cpu_target_only():
    env = {}
    assert cap_onednn_isa("CPU", env, AVX512, "x86_64") == CAP
    assert env == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    for target in ("GPU", "Ascend"):
        env = {}
        assert cap_onednn_isa(target, env, AVX512, "x86_64") is None and env == {}


def test_no_cap_without_avx512_or_off_x86():
    env = {}
    assert cap_onednn_isa("CPU", env, {"avx", "avx2", "fma"}, "x86_64") is None and env == {}
    assert cap_onednn_isa("CPU", env, AVX512, "aarch64") is None and env == {}


@pytest.mark.parametrize("name", ["ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"])
def test_users_own_setting_is_respected(name):
    env = {name: "AVX512_CORE"}
    assert cap_onednn_isa("CPU", env, AVX512, "x86_64") is None
    assert env == {name: "AVX512_CORE"}


def test_flags_and_summary_of_this_machine():
    flags = cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo")
    summary = isa_summary(flags)
    assert ("AVX-512" in summary) == ("avx512f" in flags)
    assert isa_summary(AVX512).startswith("AVX-512 (avx512bw avx512f")
    assert isa_summary({"avx", "avx2"}) == "AVX2"


# The real commands, with the cap forced to SSE4.1 on a pretended AVX-512 CPU: oneDNN's own verbose
# line then says which ISA it took. SSE4.1 is on every x86-64 CPU, so this runs anywhere, and it
# fails if any command ran a oneDNN kernel before setup_device set the variable.
FORCE = ("import runpy, sys; import src.cpu_isa as c; c.CAP = 'SSE41'; "
         "c.cpu_flags = lambda path='': {'avx2', 'avx512f'}; sys.argv = sys.argv[1:]; "
         "runpy.run_path(sys.argv[0], run_name='__main__')")


def _run_forced(script, *args, user_isa=None):
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
    env["ONEDNN_VERBOSE"] = "1"
    if user_isa:
        env["ONEDNN_MAX_CPU_ISA"] = user_isa
    return subprocess.run([sys.executable, "-c", FORCE, script, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def _isa_lines(proc):
    out = proc.stdout + proc.stderr
    return {line.split("isa:", 1)[1].strip() for line in out.splitlines() if "onednn_verbose" in line
            and ",isa:" in line}, out.count("primitive,exec,cpu,convolution")


@pytest.mark.skipif(not cpu_flags() or "x86" not in os.uname().machine, reason="x86 Linux only")
def test_restore_and_train_take_the_cap_before_the_first_convolution(tmp_path, tiny_ckpt):
    image = DATASETS / "CSet5" / "bird.png"
    proc = _run_forced("restore.py", "--config", "ipt_tiny", "--task", "sr_x2", "--ckpt", tiny_ckpt,
                       "--input", image, "--output", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    isas, convs = _isa_lines(proc)
    assert convs > 0 and isas == {"Intel SSE4.1"}, isas
    assert "capped at SSE41" in proc.stderr

    proc = _run_forced("train.py", "--config", "ipt_tiny", "--train_mode", "finetune", "--tasks", "[sr_x2]",
                       "--train_path", DATASETS / "train" / "DIV2K_crop256", "--batch_size", 2,
                       "--steps", 1, "--log_every", 1, "--save_every", 1, "--out_dir", tmp_path / "run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    isas, convs = _isa_lines(proc)
    assert convs > 0 and isas == {"Intel SSE4.1"}, isas


@pytest.mark.skipif(not cpu_flags() or "x86" not in os.uname().machine, reason="x86 Linux only")
def test_user_setting_wins_in_a_real_command(tmp_path, tiny_ckpt):
    proc = _run_forced("restore.py", "--config", "ipt_tiny", "--task", "denoise_30", "--ckpt", tiny_ckpt,
                       "--input", DATASETS / "CSet5" / "bird.png", "--output", tmp_path / "out",
                       user_isa="AVX")
    assert proc.returncode == 0, proc.stderr[-2000:]
    isas, _ = _isa_lines(proc)
    assert isas == {"Intel AVX"}, isas
    assert "capped" not in proc.stderr


def test_health_check_reports_both_settings(tmp_path):
    """bench/check_cpu.py names the CPU, both settings, oneDNN's convolution and a verdict."""
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, "bench/check_cpu.py", "--seconds", "0.05", "--json", out], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    assert "as the commands run" in proc.stdout and "oneDNN uncapped" in proc.stdout
    assert ("ok:" in proc.stdout) == (proc.returncode == 0) and "Traceback" not in proc.stderr
    import json
    results = json.loads(out.read_text())["results"]
    assert [r["setting"] for r in results] == ["as the commands run", "oneDNN uncapped"]
    assert all(r["linear 2048x576x2304"] > 0 and r["implementation"] for r in results)
