"""export.py, exported-model runners, the Ascend 310 data path (preprocess -> model -> postprocess)."""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import time

import numpy as np
import pytest

from tests.conftest import DATASETS, ROOT, run_cli

SET5 = DATASETS / "CSet5"
TASKS = ("sr_x2", "sr_x3", "sr_x4", "derain", "denoise_30", "denoise_50")
BATCH = 4  # export batch; eval's tile_batch stays 8, so runners must chunk


def _tiles(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, 3, 48, 48)) * 255).astype(np.float32)


def _reference(ckpt, task_name: str, x: np.ndarray) -> np.ndarray:
    """The checkpoint's own output: the six-task model's task cell, as eval.py runs it."""
    import mindspore as ms
    from src.config import load_config
    from src.inference import load_task_model
    from src.tasks import get_task
    net = load_task_model(load_config("ipt_tiny"), get_task(task_name), ckpt)
    return net(ms.Tensor(x)).asnumpy()


def _export(ckpt, out, task: str, fmt: str = "MINDIR", batch: int = BATCH, *extra: str) -> None:
    export = importlib.import_module("export")
    assert export.main(["--config", "ipt_tiny", "--ckpt", str(ckpt), "--task", task, "--file_format", fmt,
                        "--export_batch", str(batch), "--file_name", str(out), *extra]) == 0


def _assert_float_rounding(out, ref) -> None:
    """`out` equals `ref` up to float32 rounding: an exported file holds one LayerNorm op per norm
    (src.common.for_export), the checkpoint's CPU graph sums its rows as matmuls (~3e-4 where
    random-init outputs reach a few hundred); a wrong weight or layer moves outputs by far more."""
    diff = np.abs(out - ref)
    assert diff.max() <= 1e-5 * np.abs(ref).max() and diff.mean() <= 1e-4


def _eval(ckpt, task: str = "sr_x2", **overrides) -> dict:
    from src.config import load_config
    from src.tasks import get_task
    evaluate = importlib.import_module("eval").evaluate
    cfg = load_config("ipt_tiny", {"ckpt": str(ckpt), "task": task, "data_path": str(SET5), **overrides})
    return evaluate(cfg, get_task(task))


@pytest.fixture(scope="module")
def exports(tiny_ckpt, tmp_path_factory):
    """Every task of the six-task tiny checkpoint as a batch-4 MindIR (exported once per module)."""
    folder = tmp_path_factory.mktemp("exports")
    for task in TASKS:
        _export(tiny_ckpt, folder / f"{task}", task)
    return {task: folder / f"{task}.mindir" for task in TASKS}


@pytest.mark.parametrize("task", TASKS)
def test_mindir_matches_checkpoint_and_holds_only_its_task(exports, tiny_ckpt, task):
    import mindspore as ms
    from mindspore import nn
    from src.config import load_config
    from src.exported import read_mindir_proto, mindir_info
    from src.ipt import IPT
    from src.tasks import get_task
    x = _tiles(BATCH, seed=len(task))
    out = nn.GraphCell(ms.load(str(exports[task])))(ms.Tensor(x)).asnumpy()
    ref = _reference(tiny_ckpt, task, x)
    side = 48 * get_task(task).scale
    assert out.shape == ref.shape == (BATCH, 3, side, side)
    _assert_float_rounding(out, ref)
    # only the body and this task's head, tail and query row: as many values as a one-task model
    info = mindir_info(exports[task])
    assert info.task == task and info.batch == BATCH and info.input_shape == (BATCH, 3, 48, 48)
    stored = sum(int(np.prod(p.dims)) for p in read_mindir_proto(exports[task]).graph.parameter)
    cfg = load_config("ipt_tiny")
    assert stored == IPT(load_config("ipt_tiny", {"tasks": [task], "num_queries": 1})).num_parameters()
    assert stored < IPT(cfg).num_parameters()


def test_eval_psnr_equal_for_ckpt_and_mindir(exports, tiny_ckpt):
    from_ckpt = _eval(tiny_ckpt)
    from_mindir = _eval(exports["sr_x2"])  # batch-4 file fed by tile_batch 8: chunked
    assert from_ckpt["images"] == from_mindir["images"] == 5
    assert abs(from_ckpt["psnr"] - from_mindir["psnr"]) <= 1e-3
    assert abs(from_ckpt["ssim"] - from_mindir["ssim"]) <= 1e-5
    for a, b in zip(from_ckpt["rows"], from_mindir["rows"]):
        assert abs(a["psnr"] - b["psnr"]) <= 1e-3


def test_dynamic_batch_mindir_runs_any_batch(tiny_ckpt, tmp_path):
    from src.exported import load_exported_runner, mindir_info
    from src.tasks import get_task
    _export(tiny_ckpt, tmp_path / "dyn", "sr_x2", "MINDIR", 0)
    assert mindir_info(tmp_path / "dyn.mindir").batch is None
    x = _tiles(3, seed=7)
    out = load_exported_runner(tmp_path / "dyn.mindir", get_task("sr_x2"), 3)(x)
    _assert_float_rounding(out, _reference(tiny_ckpt, "sr_x2", x))


def test_wrong_task_or_scale_is_a_one_line_error(exports, capsys):
    from src.checkpoint import CheckpointError
    from src.exported import load_exported_runner
    from src.tasks import get_task
    with pytest.raises(CheckpointError, match=r"exported for sr_x2 \(x2\), not sr_x4 \(x4\)"):
        load_exported_runner(exports["sr_x2"], get_task("sr_x4"), 8)
    with pytest.raises(CheckpointError, match="exported for denoise_30 .*not denoise_50"):
        load_exported_runner(exports["denoise_30"], get_task("denoise_50"), 8)
    eval_cli = importlib.import_module("eval")
    with pytest.raises(SystemExit) as exit_info:
        eval_cli.main(["--config", "ipt_tiny", "--task", "sr_x4", "--ckpt", str(exports["sr_x2"]),
                       "--data_path", str(SET5)])
    assert exit_info.value.code != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "sr_x2" in err[0] and "sr_x4" in err[0]


def test_fixed_batch_runner_chunks_and_pads():
    from src.exported import FixedBatchRunner
    calls = []

    def fn(batch):
        calls.append(batch.shape[0])
        return np.repeat(np.repeat(batch, 2, axis=2), 2, axis=3)
    x = _tiles(7)
    out = FixedBatchRunner(fn, 3, 96)(x)
    assert calls == [3, 3, 3]
    np.testing.assert_array_equal(out, np.repeat(np.repeat(x, 2, axis=2), 2, axis=3))


@pytest.mark.parametrize("task", ["sr_x2", "denoise_30"])
def test_onnx_round_trip(tiny_ckpt, tmp_path, task):
    """ONNX Runtime sums in another order than MindSpore: float32 rounding differs by up to ~2e-3
    where random-init outputs reach +-400 (MindSpore itself differs ~2e-4 between batch sizes), so
    the max difference is bounded by 1e-5 of the output magnitude and the mean by 1e-4."""
    pytest.importorskip("onnxruntime")
    from src.exported import load_exported_runner
    from src.tasks import get_task
    _export(tiny_ckpt, tmp_path / task, task, "ONNX", 2)
    x = _tiles(BATCH, seed=3)
    out = load_exported_runner(tmp_path / f"{task}.onnx", get_task(task), BATCH)(x)  # 2 calls of 2
    _assert_float_rounding(out, _reference(tiny_ckpt, task, x))
    if importlib.util.find_spec("onnx"):
        import onnx
        meta = {p.key: p.value for p in onnx.load(str(tmp_path / f"{task}.onnx")).metadata_props}
        assert meta["ipt_task"] == task and meta["ipt_batch"] == "2"


def _cpu_stand_in(mindir, in_dir, out_dir) -> int:
    """What ascend310_infer/src/main.cc does, with MindSpore on the CPU: each .bin -> same name."""
    import mindspore as ms
    from mindspore import nn
    from src.exported import mindir_info
    info = mindir_info(mindir)
    cell = nn.GraphCell(ms.load(str(mindir)))
    out_dir.mkdir()
    files = sorted(in_dir.glob("*.bin"))
    for path in files:
        x = np.fromfile(path, np.float32).reshape(info.input_shape)
        cell(ms.Tensor(x)).asnumpy().astype(np.float32).tofile(out_dir / path.name)
    return len(files)


def test_310_data_path_gives_eval_psnr(exports, tiny_ckpt, tmp_path, capsys):
    pre, res, out = tmp_path / "preprocess_Result", tmp_path / "result_Files", tmp_path / "acc.json"
    preprocess = importlib.import_module("preprocess")
    assert preprocess.main(["--task", "sr_x2", "--data_path", str(SET5), "--output", str(pre),
                            "--ckpt", str(exports["sr_x2"])]) == 0
    manifest = json.loads((pre / "ipt_manifest.json").read_text())
    assert manifest["tile_batch"] == BATCH and len(manifest["images"]) == 5  # batch taken from the file
    n = _cpu_stand_in(exports["sr_x2"], pre, res)
    assert n == sum(len(i["files"]) for i in manifest["images"])
    assert os.path.getsize(next(pre.glob("*.bin"))) == BATCH * 3 * 48 * 48 * 4
    postprocess = importlib.import_module("postprocess")
    assert postprocess.main(["--pre_path", str(pre), "--result_path", str(res), "--json", str(out)]) == 0
    scored, evaluated = json.loads(out.read_text()), _eval(tiny_ckpt)
    assert abs(scored["psnr"] - evaluated["psnr"]) <= 1e-3
    assert [r["name"] for r in scored["rows"]] == [r["name"] for r in evaluated["rows"]]
    # a missing output is a clear error, not a silent zero
    missing = next(res.glob("*.bin"))
    missing.unlink()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        postprocess.main(["--pre_path", str(pre), "--result_path", str(res)])
    assert exit_info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and f"{missing} is missing: did inference finish?" in err[0]


def _tree(folder):
    """Every path under folder with its mtime: what a failed build must leave as it was."""
    return {str(p): p.stat().st_mtime_ns for p in [folder, *folder.rglob("*")]} if folder.exists() else None


def test_build_sh_fails_clearly_without_the_library(tmp_path):
    out = ROOT / "ascend310_infer" / "out"
    before = _tree(out)  # absent, or a build made by hand (scripts/check_310_build.sh)
    for env_path in (None, str(tmp_path)):
        env = {k: v for k, v in os.environ.items() if k != "MINDSPORE_PATH"}
        if env_path:
            env["MINDSPORE_PATH"] = env_path
        start = time.perf_counter()
        proc = subprocess.run(["bash", str(ROOT / "ascend310_infer" / "build.sh")], capture_output=True,
                              text=True, env=env, timeout=60)
        assert proc.returncode != 0
        assert "MindSpore C++ inference library not found" in proc.stderr
        assert time.perf_counter() - start < 30
    assert _tree(out) == before  # not created, nor touched


def test_run_infer_310_checks_its_arguments(tmp_path):
    script = str(ROOT / "scripts" / "run_infer_310.sh")
    bogus = tmp_path / "m.mindir"
    bogus.write_bytes(b"")
    for args in ([], [str(bogus), str(SET5)], [str(bogus), str(SET5), "sr_x5"],
                 [str(tmp_path / "missing.mindir"), str(SET5), "sr_x2"], [str(bogus), str(SET5), "sr_x2", "x"]):
        proc = subprocess.run(["bash", script, *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "Usage: bash scripts/run_infer_310.sh" in proc.stderr


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")
def test_cpp_helpers_compile_and_work(tmp_path):
    """ascend310_infer's helpers do not need MindSpore: build and run them here."""
    driver = tmp_path / "t.cc"
    driver.write_text(r'''
#include "inc/utils.h"
#include <iostream>
int main(int, char **) {
  const char *args[] = {"main", "--mindir_path=m.mindir", "--input_path", "in", "--device_id=3"};
  InferOptions o; std::string e;
  if (!ParseOptions(5, const_cast<char **>(args), &o, &e) || o.device_id != 3 || o.input_path != "in") return 1;
  const char *bad[] = {"main", "--mindir_path=m", "--input_path=i", "--device_id=x"};
  InferOptions o2; if (ParseOptions(4, const_cast<char **>(bad), &o2, &e)) return 2;
  std::string dir = std::string(getenv("T")) + "/d/e";
  float x[3] = {1, 2, 3};
  if (!MakeDirectories(dir) || !WriteBinaryFile(dir + "/b.bin", x, sizeof x)) return 3;
  if (!WriteBinaryFile(dir + "/a.bin", x, 4)) return 3;
  std::vector<uint8_t> buf;
  if (!ReadBinaryFile(dir + "/b.bin", &buf) || buf.size() != sizeof x) return 4;
  auto files = ListBinFiles(dir);
  if (files.size() != 2 || files[0] != "a.bin") return 5;
  std::cout << "ok" << std::endl;
  return 0;
}
''')
    exe = tmp_path / "t"
    infer = ROOT / "ascend310_infer"
    build = subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", f"-I{infer}", str(driver),
                            str(infer / "src" / "utils.cc"), "-o", str(exe)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, env={**os.environ, "T": str(tmp_path)})
    assert run.returncode == 0 and run.stdout.strip() == "ok"


MOCK_API = ROOT / "tests" / "fixtures" / "mindspore_api_mock"  # include/api/*.h; IPT_MOCK_FAIL=CALL:HOW


def _run_runner(exe, tmp_path, fail: str = ""):
    """out/main on one (1, 3, 48, 48) float32 tile batch, the mock's input; IPT_MOCK_FAIL=fail."""
    tiles = tmp_path / "tiles"
    tiles.mkdir(exist_ok=True)
    _tiles(1).tofile(tiles / "0000.bin")
    env = {k: v for k, v in os.environ.items() if k != "IPT_MOCK_FAIL"}
    if fail:
        env["IPT_MOCK_FAIL"] = fail
    return subprocess.run([str(exe), f"--mindir_path={tiles / '0000.bin'}", f"--input_path={tiles}",
                           f"--output_path={tmp_path / 'result_Files'}"], capture_output=True, text=True,
                          env=env, timeout=60)


@pytest.fixture(scope="module")
def mock_runner(tmp_path_factory):
    """ascend310_infer/src/main.cc built against the mock MindSpore API (no MindSpore needed)."""
    if shutil.which("g++") is None:
        pytest.skip("no C++ compiler")
    infer = ROOT / "ascend310_infer"
    exe = tmp_path_factory.mktemp("mock_runner") / "main"
    build = subprocess.run(["g++", "-std=c++17", "-O1", "-Wall", "-Werror", "-D_GLIBCXX_USE_CXX11_ABI=0",
                            f"-I{MOCK_API}", f"-I{infer}", str(infer / "src" / "main.cc"),
                            str(infer / "src" / "utils.cc"), "-o", str(exe)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return exe


def test_310_runner_writes_each_output_under_its_input_name(mock_runner, tmp_path):
    run = _run_runner(mock_runner, tmp_path)
    assert run.returncode == 0, run.stderr
    assert "inferred 1 tile batches (1 tiles)" in run.stdout and run.stderr == ""
    assert (tmp_path / "result_Files" / "0000.bin").stat().st_size == 3 * 96 * 96 * 4
    assert not list((tmp_path / "result_Files").glob("*.part"))


RUNNER_FAILURES = [
    # MindSpore Lite throws on a MindIR newer than itself (Lite 2.0 on a MindSpore 2.10 export)
    ("load:throw", r"cannot load \S+: This software can only support the maximum mind ir version: 1, please install "
                   r"the latest version to support the mind ir version: 3 \(this MindSpore runtime is older than "
                   r"the MindIR format of the file: install the MindSpore Lite release matching the exporting "
                   r"MindSpore"),
    ("load:status", r"cannot load \S+: Load model failed\.$"),
    ("load:unknown", r"cannot load \S+: unknown exception$"),
    ("build:throw", r"cannot build the model for Ascend 310 device 0: mock build failed$"),
    ("build:status", r"cannot build the model for Ascend 310 device 0: Build model failed: mock$"),
    ("inputs:throw", r"MindSpore: mock inputs failed$"),
    ("inputs:unknown", r"MindSpore: unknown exception$"),
    ("predict:throw", r"inference failed on \S+0000\.bin: mock predict failed$"),
    ("predict:status", r"inference failed on \S+0000\.bin: no reason given \(MindSpore status 268435456\)$"),
    ("predict:unknown", r"inference failed on \S+0000\.bin: unknown exception$"),
]


@pytest.mark.parametrize("fail,message", RUNNER_FAILURES, ids=[fail for fail, _ in RUNNER_FAILURES])
def test_310_runner_mindspore_failures_are_one_line_errors(mock_runner, tmp_path, fail, message):
    """A MindSpore error Status or exception from Load, Build, GetInputs or Predict: one line, exit 1, no abort."""
    import re
    run = _run_runner(mock_runner, tmp_path, fail)
    assert run.returncode == 1, (run.returncode, run.stderr)
    err = run.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), run.stderr
    assert re.search(message, err[0][len("error: "):]), err[0]
    assert not list((tmp_path / "result_Files").glob("*.bin"))


def _fake_mindspore(folder, lib: str):
    """A MindSpore install folder as build.sh looks for it: the mock headers and an empty lib/LIB."""
    shutil.copytree(MOCK_API / "include", folder / "include")
    (folder / "lib").mkdir()
    build = subprocess.run(["g++", "-shared", "-fPIC", "-x", "c++", os.devnull, f"-Wl,-soname,{lib}", "-o",
                            str(folder / "lib" / lib)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return folder


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")
@pytest.mark.parametrize("lib,builder", [
    ("libmindspore.so", "cmake"),                   # the Ascend 310 inference package (CANN layout)
    ("libmindspore-extendrt_python.so", "g++"),     # the MindSpore Lite pip wheel, built without cmake
    ("libmindspore-lite.so", "g++"),                # the runtime/ folder of a MindSpore Lite tarball
])
def test_build_sh_builds_against_either_layout(tmp_path, lib, builder):
    if builder == "cmake" and not (shutil.which("cmake") and shutil.which("make")):
        pytest.skip("no cmake/make")
    ms_path = _fake_mindspore(tmp_path / "ms", lib)
    out = tmp_path / "out"
    env = {**os.environ, "MINDSPORE_PATH": str(ms_path), "IPT_310_BUILDER": builder, "IPT_310_OUT_DIR": str(out)}
    proc = subprocess.run(["bash", str(ROOT / "ascend310_infer" / "build.sh")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"MindSpore: {ms_path} (lib/{lib})" in proc.stdout and f"built {out / 'main'}" in proc.stdout
    run = _run_runner(out / "main", tmp_path, "load:throw")  # the library is found without LD_LIBRARY_PATH
    assert run.returncode == 1 and run.stderr.startswith("error: cannot load ") and len(run.stderr.splitlines()) == 1


def test_export_refuses_to_overwrite(tiny_ckpt, tmp_path):
    target = tmp_path / "ipt.mindir"
    target.write_bytes(b"precious")
    proc = run_cli("export.py", "--config", "ipt_tiny", "--ckpt", tiny_ckpt, "--task", "sr_x2",
                   "--file_name", tmp_path / "ipt")
    assert proc.returncode != 0 and "exists; pass --overwrite" in proc.stderr
    assert target.read_bytes() == b"precious"
    _export(tiny_ckpt, tmp_path / "ipt.mindir", "sr_x2", "MINDIR", 1, "--overwrite", "true")
    assert target.stat().st_size > 1000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


@pytest.mark.parametrize("args,message", [
    (["--file_format", "AIR"], "AIR export needs an Ascend device"),
    (["--file_format", "ONNX", "--export_batch", "0"], "MINDIR only"),
    (["--file_format", "TFLITE"], "--file_format must be MINDIR, ONNX or AIR"),
    (["--ckpt", "model.mindir"], "already an export"),
    (["--task", "sr_x5"], "unknown task"),
])
def test_export_bad_options_are_one_line_errors(tiny_ckpt, tmp_path, capsys, args, message):
    export = importlib.import_module("export")
    base = ["--config", "ipt_tiny", "--ckpt", str(tiny_ckpt), "--task", "sr_x2", "--file_name", str(tmp_path / "x")]
    with pytest.raises(SystemExit) as exit_info:
        export.main(base + args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not list(tmp_path.iterdir())
