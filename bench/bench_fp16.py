"""float16 inference against float32 with the shipped weights: PSNR, and how close fp16 comes to overflow.

    python bench/bench_fp16.py [--levels O2 O3] [--json bench/fp16_vs_fp32.json]

PSNR/SSIM (Y) of eval.py at `--amp_level O0` (float32) and at each level in float16, on Set5 x2
(5 images) and the first 10 images of CBSD68 sigma 30. Then, on 48x48 tiles of the same images
through the float32 model (PyNative, forward pre-hooks), the largest |value| entering each kind of
cell an O2/O3 model would hold in float16 or feed from float16: LayerNorm inputs, attention logits
(softmax inputs), Dense/matmul inputs and the body's output tokens, against float16's 65504.
On CPU, MindSpore runs MatMul/BatchMatMul/Conv2D/BiasAdd in float32 between float16 tensors
(no float16 kernels): these numbers are the float16 rounding of every tensor between ops, not of
float16 accumulation inside those kernels (GPU/Ascend).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.cpu_isa import cpu_name  # noqa: E402

LOG = logging.getLogger("bench_fp16")
DATASETS = ROOT.parent / "shared" / "datasets"
CASES = [("sr_x2", "CSet5", 5), ("denoise_30", "CBSD68", 10)]
FP16_MAX = 65504.0


def subset(folder: Path, limit: int, tmp: Path) -> Path:
    """A folder of symlinks to the first `limit` images."""
    out = tmp / folder.name
    out.mkdir(exist_ok=True)
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")[:limit]:
        if not (out / path.name).exists():
            os.symlink(path.resolve(), out / path.name)
    return out


def run_eval(task: str, data: Path, level: str, tmp: Path) -> dict:
    out = tmp / f"{task}_{level}.json"
    subprocess.run([sys.executable, "eval.py", "--task", task, "--data_path", str(data), "--amp_level", level,
                    "--compute_dtype", "float16", "--json", str(out), "--log_level", "WARNING"],
                   cwd=ROOT, check=True)
    return json.loads(out.read_text())


def activation_peaks(task_name: str, data: Path, tiles_per_image: int = 4) -> dict:
    """Max |input| per cell kind over random 48x48 tiles of the benchmark inputs (float32 model)."""
    import mindspore as ms
    from mindspore import nn
    from src.benchmarks import open_benchmark
    from src.common import LayerNorm
    from src.config import parse_cli
    from src.tasks import get_task
    from src.transformer import MatMul, Softmax
    from src.utils import setup_device
    from src.weights import load_task_model, resolve_checkpoint
    cfg = parse_cli(["--mode", "PYNATIVE", "--task", task_name])  # as eval.py: the checkpoint's model options
    setup_device(cfg)
    task = get_task(task_name)
    net = load_task_model(cfg, task, resolve_checkpoint(cfg, task))
    peaks = {"layernorm_input": 0.0, "attention_logits": 0.0, "dense_or_matmul_input": 0.0, "body_tokens": 0.0}
    kinds = ((LayerNorm, "layernorm_input"), (Softmax, "attention_logits"), ((nn.Dense, MatMul), "dense_or_matmul_input"))

    def hook_for(key):
        def hook(cell, inputs):
            peaks[key] = max(peaks[key], max(float(np.abs(x.asnumpy()).max()) for x in inputs if hasattr(x, "asnumpy")))
        return hook

    for _, cell in net.model.cells_and_names():
        for cls, key in kinds:
            if isinstance(cell, cls):
                cell.register_forward_pre_hook(hook_for(key))
    tokens_net = net.model.task_net(task_name, with_tokens=True)
    bench = open_benchmark(data, task.kind, task.scale, task.sigma, seed=cfg.noise_seed)
    rng = np.random.default_rng(0)
    for item in bench:
        img = np.asarray(item.input, np.float32)
        img = img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)
        h, w = img.shape[:2]
        tiles = []
        for _ in range(tiles_per_image):
            y, x = rng.integers(0, h - 47), rng.integers(0, w - 47)
            tiles.append(img[y:y + 48, x:x + 48].transpose(2, 0, 1))
        _, tokens = tokens_net(ms.Tensor(np.stack(tiles)))
        peaks["body_tokens"] = max(peaks["body_tokens"], float(np.abs(tokens.asnumpy()).max()))
    return {k: {"max_abs": v, "fraction_of_fp16_max": v / FP16_MAX} for k, v in peaks.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", nargs="+", default=["O2", "O3"], help="float16 levels to compare with O0")
    parser.add_argument("--json", default=str(ROOT / "bench" / "fp16_vs_fp32.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows, peaks = [], {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for task, folder, limit in CASES:
            data = subset(DATASETS / folder, limit, tmp)
            ref = run_eval(task, data, "O0", tmp)
            for level in args.levels:
                res = run_eval(task, data, level, tmp)
                rows.append({"task": task, "set": folder, "images": res["images"], "level": level,
                             "fp32_psnr": ref["psnr"], "fp16_psnr": res["psnr"], "psnr_diff": res["psnr"] - ref["psnr"],
                             "fp32_ssim": ref["ssim"], "fp16_ssim": res["ssim"],
                             "fp32_seconds_per_image": ref["seconds_per_image"],
                             "fp16_seconds_per_image": res["seconds_per_image"]})
                LOG.info("%s %s %s: PSNR fp32 %.3f fp16 %.3f (%+.3f dB)", task, folder, level, ref["psnr"],
                         res["psnr"], res["psnr"] - ref["psnr"])
            # PyNative hooks need their own process (eval ran GRAPH): a child run of this file's function
            code = (f"import json,sys; sys.path.insert(0, {str(ROOT)!r}); sys.argv=['x'];"
                    f"from bench.bench_fp16 import activation_peaks;"
                    f"print(json.dumps(activation_peaks({task!r}, __import__('pathlib').Path({str(data)!r}))))")
            out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
            peaks[task] = json.loads(out.stdout.strip().splitlines()[-1])
            LOG.info("%s activation peaks (fp32 model): %s", task,
                     ", ".join(f"{k} {v['max_abs']:.4g}" for k, v in peaks[task].items()))
    result = {"cpu": cpu_name(), "weights": "shipped ipt_tiny (pretrained/, src/weights.py default)",
              "compute_dtype": "float16", "fp16_max": FP16_MAX, "rows": rows, "activation_peaks": peaks}
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"{'task':<11} {'set':<7} {'n':>3} {'level':<5} {'fp32 PSNR':>9} {'fp16 PSNR':>9} {'diff dB':>8} {'s/img 32/16':>12}")
    for r in rows:
        print(f"{r['task']:<11} {r['set']:<7} {r['images']:>3} {r['level']:<5} {r['fp32_psnr']:>9.3f} "
              f"{r['fp16_psnr']:>9.3f} {r['psnr_diff']:>+8.3f} {r['fp32_seconds_per_image']:>5.2f}/"
              f"{r['fp16_seconds_per_image']:<5.2f}")


if __name__ == "__main__":
    main()
