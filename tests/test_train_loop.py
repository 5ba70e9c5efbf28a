"""The training loop: validation with best checkpoints, EMA, metrics.jsonl, exact resume, plots."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from src.checkpoint import read_checkpoint
from src.train_loop import METRICS_FILE, read_metrics
from src.weights import best_checkpoint_name, checkpoint_name

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"
TASKS = ("sr_x2", "denoise_30")


@pytest.fixture(scope="module")
def val_dir(tmp_path_factory):
    """Two small clean images: validation for sr_x2 (bicubic LR) and denoise_30 (noise added)."""
    root = tmp_path_factory.mktemp("val")
    for name in ("baby", "bird"):
        img = cv2.imread(str(DATA / "CSet5" / f"{name}.png"))
        cv2.imwrite(str(root / f"{name}.png"), img[100:196, 100:196])
    return root


def _run(out, val_dir, *extra, timeout=600):
    cmd = [sys.executable, "train.py", "--config", "ipt_tiny", "--tasks", f"[{','.join(TASKS)}]",
           "--batch_size", "4", "--steps", "6", "--seed", "4", "--lr_max", "2e-3", "--lr_min", "5e-4",
           "--log_every", "1", "--save_every", "3", "--keep_last", "0", "--val_every", "2",
           "--val_path", str(val_dir), "--val_limit", "2", "--ema_decay", "0.999", "--workers", "1",
           "--out_dir", str(out), *map(str, extra)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def run_a(tmp_path_factory, val_dir):
    out = tmp_path_factory.mktemp("loop") / "a"
    _run(out, val_dir)
    return out


def _arrays(path):
    params, meta = read_checkpoint(path)
    arrays = {k: v.asnumpy() for k, v in params.items()}
    for part in ("optimizer", "ema"):
        arrays.update({k: v.asnumpy() for k, v in meta[part].items()})
    return arrays, meta


def _without_timing(records):
    return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in records]


def test_metrics_and_best_checkpoints(run_a, val_dir):
    records = read_metrics(run_a)
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert all({"task", "loss", "l1", "contrastive", "lr", "loss_scale", "samples_per_s"} <= set(r) for r in train)
    assert sorted((r["step"], r["task"]) for r in val) == [(s, t) for s in (2, 4, 6) for t in sorted(TASKS)]
    assert all(r["weights"] == "ema" and r["images"] == 2 for r in val)
    for task in TASKS:
        logged = [r for r in val if r["task"] == task]
        best = max(logged, key=lambda r: r["val_psnr"])  # first of equal maxima: the file is kept on ties
        _, meta = read_checkpoint(run_a / best_checkpoint_name(task))
        assert int(meta["step"]) == best["step"] and float(meta["val_psnr"]) == best["val_psnr"]
        # eval.py on the same images, from the best file, gives the logged validation PSNR exactly
        out = run_a / f"eval_{task}.json"
        proc = subprocess.run([sys.executable, "eval.py", "--task", task, "--data_path", str(val_dir),
                               "--ckpt", str(run_a / best_checkpoint_name(task)), "--json", str(out)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads(out.read_text())["psnr"] == pytest.approx(best["val_psnr"], abs=1e-9)
    # The rolling checkpoints keep the EMA beside the weights, and a 0.999 average barely moves
    arrays, meta = _arrays(run_a / checkpoint_name(6))
    ema = {k[len("ema."):]: v for k, v in arrays.items() if k.startswith("ema.")}
    assert ema and json.loads(meta["best"]).keys() == set(TASKS)
    moved = [float(np.abs(arrays[k] - v).max()) for k, v in ema.items()]
    assert max(moved) > 0  # the weights moved away from their average


def test_resume_keeps_ema_best_and_metrics_exact(run_a, val_dir, tmp_path):
    out = tmp_path / "b"
    _run(out, val_dir, "--stop_after", "4")  # saves at 3 and at 4 (the end of this part)
    (out / checkpoint_name(4)).unlink()       # killed after step 4's logs, before its checkpoint
    second = _run(out, val_dir, "--resume", "true")
    assert "ipt_step00000003.ckpt at step 3" in second.stderr
    a, meta_a = _arrays(run_a / checkpoint_name(6))
    b, meta_b = _arrays(out / checkpoint_name(6))
    assert set(a) == set(b) and any(k.startswith("ema.") for k in a)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert meta_a["best"] == meta_b["best"]
    for task in TASKS:
        pa, _ = read_checkpoint(run_a / best_checkpoint_name(task))
        pb, _ = read_checkpoint(out / best_checkpoint_name(task))
        for name in pa:
            np.testing.assert_array_equal(pa[name].asnumpy(), pb[name].asnumpy(), err_msg=name)
    # metrics.jsonl reads as one uninterrupted run: step 4's records were dropped and redone
    assert _without_timing(read_metrics(out)) == _without_timing(read_metrics(run_a))


def test_plot_losses_draws_loss_and_validation_panels(run_a, tmp_path):
    png = tmp_path / "curves.png"
    proc = subprocess.run([sys.executable, "scripts/plot_losses.py", str(run_a), "--out", str(png)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    img = cv2.imread(str(png))
    assert img.shape == (840, 900, 3)  # two panels: loss, validation PSNR
    for panel in (img[:420], img[420:]):  # both tasks' colours drawn in each panel
        for bgr in ((180, 119, 31), (14, 127, 255)):
            assert (np.abs(panel.astype(int) - bgr).sum(axis=2) < 30).sum() > 20
    missing = subprocess.run([sys.executable, "scripts/plot_losses.py", str(tmp_path)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and METRICS_FILE in missing.stderr
