"""src/cpu_isa.py: on AVX-512 the CPU gets im2col convolutions and uncapped matmuls, exported files
the AVX2 cap, everything else is left alone, and every command decides before its first kernel."""
import os
import subprocess
import sys

import pytest

from src.cpu_isa import CAP, IM2COL, NATIVE, cpu_flags, cpu_name, isa_summary, plan_cpu_kernels
from tests.conftest import DATASETS, ROOT

AVX512 = {"avx2", "avx512f", "avx512bw", "avx512vl"}


def test_avx512_cpu_gets_im2col_and_no_cap():
    env = {}
    assert plan_cpu_kernels("CPU", env, AVX512, "x86_64") == (IM2COL, None)
    assert env == {}


def test_native_convolutions_on_avx512_take_the_cap():
    env = {}
    assert plan_cpu_kernels("CPU", env, AVX512, "x86_64", native_convs=True) == (NATIVE, CAP)
    assert env == {"ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_gpu_ascend_avx2_and_non_x86_left_alone():
    for target in ("GPU", "Ascend"):
        for native in (False, True):
            env = {}
            assert plan_cpu_kernels(target, env, AVX512, "x86_64", native) == (NATIVE, None) and env == {}
    env = {}
    assert plan_cpu_kernels("CPU", env, {"avx", "avx2", "fma"}, "x86_64") == (NATIVE, None) and env == {}
    assert plan_cpu_kernels("CPU", env, AVX512, "aarch64", True) == (NATIVE, None) and env == {}


@pytest.mark.parametrize("name", ["ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"])
def test_users_own_setting_is_respected(name):
    for native in (False, True):
        env = {name: "AVX512_CORE"}
        assert plan_cpu_kernels("CPU", env, AVX512, "x86_64", native) == (NATIVE, None)
        assert env == {name: "AVX512_CORE"}


def test_flags_and_summary_of_this_machine():
    flags = cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo")
    summary = isa_summary(flags)
    assert ("AVX-512" in summary) == ("avx512f" in flags)
    assert isa_summary(AVX512).startswith("AVX-512 (avx512bw avx512f")
    assert isa_summary({"avx", "avx2"}) == "AVX2"


# The real commands on a pretended AVX-512 CPU, with the cap forced to SSE4.1: oneDNN's own verbose
# lines then say which ISA it took and which convolutions ran. SSE4.1 is on every x86-64 CPU, so
# this runs anywhere, and it fails if a command ran a oneDNN kernel before setup_device decided.
FORCE = ("import runpy, sys; import src.cpu_isa as c; c.CAP = 'SSE41'; "
         "c.cpu_flags = lambda path='': {'avx2', 'avx512f'}; sys.argv = sys.argv[1:]; "
         "runpy.run_path(sys.argv[0], run_name='__main__')")
X86 = pytest.mark.skipif(not cpu_flags() or "x86" not in os.uname().machine, reason="x86 Linux only")


def _run_forced(script, *args, user_isa=None):
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
    env["ONEDNN_VERBOSE"] = "1"
    if user_isa:
        env["ONEDNN_MAX_CPU_ISA"] = user_isa
    return subprocess.run([sys.executable, "-c", FORCE, script, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def _onednn(proc):
    """(ISAs oneDNN reported, k x k convolutions it ran, matmuls it ran)."""
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("onednn_verbose")]
    isas = {line.split("isa:", 1)[1].strip() for line in lines if ",isa:" in line}
    convs = [line for line in lines if "primitive,exec,cpu,convolution" in line and "kh1" not in line]
    matmuls = [line for line in lines if "primitive,exec,cpu,matmul" in line]
    return isas, len(convs), len(matmuls)


@X86
def test_small_model_takes_the_cap_before_the_first_convolution(tmp_path, tiny_ckpt):
    """ipt_tiny (a 0.9 GFLOP body): MindSpore's Conv2D under the cap, set before oneDNN starts."""
    proc = _run_forced("restore.py", "--config", "ipt_tiny", "--task", "sr_x2", "--ckpt", tiny_ckpt,
                       "--input", DATASETS / "CSet5" / "bird.png", "--output", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    isas, convs, _ = _onednn(proc)
    assert convs > 0 and isas == {"Intel SSE4.1"}, isas
    assert "capped at SSE41" in proc.stderr


@X86
def test_large_body_trains_with_im2col_uncapped(tmp_path):
    """A body of IPT-base's width (10.7 GFLOP with 2 layers): no oneDNN k x k convolution forward
    or backward, and no cap on the matmuls."""
    proc = _run_forced("train.py", "--train_mode", "finetune", "--tasks", "[sr_x2]", "--num_layers", 2,
                       "--train_path", DATASETS / "train" / "DIV2K_crop256", "--batch_size", 2,
                       "--steps", 1, "--log_every", 1, "--save_every", 1, "--out_dir", tmp_path / "run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    isas, convs, matmuls = _onednn(proc)
    assert convs == 0 and matmuls > 0 and "Intel SSE4.1" not in isas, isas
    assert "capped" not in proc.stderr


@X86
def test_exported_file_takes_the_cap_before_its_first_convolution(tmp_path, tiny_ckpt):
    """A MindIR holds MindSpore's own Conv2D: export.py and its runner cap oneDNN first."""
    mindir = tmp_path / "tiny.mindir"
    proc = _run_forced("export.py", "--config", "ipt_tiny", "--ckpt", tiny_ckpt, "--task", "sr_x2",
                       "--file_format", "MINDIR", "--file_name", mindir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "capped at SSE41" in proc.stderr
    proc = _run_forced("restore.py", "--config", "ipt_tiny", "--task", "sr_x2", "--ckpt", mindir,
                       "--input", DATASETS / "CSet5" / "bird.png", "--output", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    isas, convs, _ = _onednn(proc)
    assert convs > 0 and isas == {"Intel SSE4.1"}, isas
    assert "capped at SSE41" in proc.stderr


@X86
def test_user_setting_wins_in_a_real_command(tmp_path, tiny_ckpt):
    """A user's own ONEDNN_MAX_CPU_ISA: no cap of ours, and MindSpore's own Conv2D."""
    proc = _run_forced("restore.py", "--config", "ipt_tiny", "--task", "denoise_30", "--ckpt", tiny_ckpt,
                       "--input", DATASETS / "CSet5" / "bird.png", "--output", tmp_path / "out",
                       user_isa="AVX")
    assert proc.returncode == 0, proc.stderr[-2000:]
    isas, convs, _ = _onednn(proc)
    assert isas == {"Intel AVX"} and convs > 0, isas
    assert "capped" not in proc.stderr


def test_health_check_reports_every_setting(tmp_path):
    """bench/check_cpu.py names the CPU, the three settings, what each convolution ran as, a verdict,
    and numpy's BLAS on the same linear for scale."""
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, "bench/check_cpu.py", "--seconds", "0.05", "--json", out], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    assert "as IPT-base runs" in proc.stdout and "oneDNN uncapped" in proc.stdout
    assert ("ok:" in proc.stdout) == (proc.returncode == 0) and "Traceback" not in proc.stderr
    import json
    report = json.loads(out.read_text())
    results = report["results"]
    assert report["numpy_blas"]["linear"] > 0 and report["numpy_blas"]["blas"]
    assert "reference, the linear in numpy" in proc.stdout
    assert [r["setting"] for r in results] == ["as IPT-base runs", "as ipt_tiny and exported files run (Conv2D)",
                                               "Conv2D, oneDNN uncapped"]
    assert all(r["linear 2048x576x2304"] > 0 and r["implementation"] for r in results)
    assert [r["formulation"] for r in results[1:]] == ["native", "native"]
    assert results[0]["formulation"] == plan_cpu_kernels("CPU", dict(os.environ))[0]


def test_cpu_name_tells_zen_generations_apart(tmp_path):
    """A VM's bare 'AMD EPYC' gets the family and model of the first processor: Zen 3 and Zen 4
    run MindSpore at different speeds, and figures must say which."""
    block = "processor\t: {}\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: {}\nmodel name\t: AMD EPYC\n\n"
    info = tmp_path / "cpuinfo"
    info.write_text(block.format(0, 1) + block.format(1, 17))
    assert cpu_name(str(info)) == "AMD EPYC (family 25 model 1)"
    info.write_text("model name\t: Some CPU\n")
    assert cpu_name(str(info)) == "Some CPU"
    assert cpu_name(str(tmp_path / "missing")) != ""
