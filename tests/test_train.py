"""Training: schedule, subset Adam, per-task updates, six-task pre-training, fine-tune loading,
exact resume, and data parallelism (2 msrun workers == one process on the global batch).

The distributed test takes about a minute; deselect it with `-k "not distributed"`.
"""
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import mindspore as ms
from mindspore import Parameter, Tensor

from src.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from src.config import load_config
from tests.helpers import held_out_batches, held_out_l1
from src.dataset import build_train_source
from src.ipt import IPT
from src.trainer import (QUERY_NAME, SubsetAdam, TrainError, Trainer, build_run, check_train_config,
                         clip_global_norm, list_checkpoints, load_pretrained_task, load_warm_start, lr_at,
                         model_config, prepare_out_dir)

ROOT = Path(__file__).resolve().parents[1]
LOG = logging.getLogger(__name__)
TASKS2 = "[sr_x2,denoise_30]"
# One short pre-training run shared by the resume and distributed tests (single process, global batch 4).
RUN = ["--config", "ipt_tiny", "--tasks", TASKS2, "--batch_size", "4", "--steps", "6", "--seed", "3",
       "--lr_max", "1e-3", "--lr_min", "1e-4", "--log_every", "1", "--save_every", "2", "--keep_last", "2",
       "--workers", "1", "--data_source", "stream", "--crops_per_image", "2"]  # the streamed source


def run_train(*args, timeout=300):
    proc = subprocess.run([sys.executable, "train.py", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    return proc


def ckpt_arrays(path):
    params, meta = read_checkpoint(path)
    arrays = {k: v.asnumpy() for k, v in params.items()}
    arrays.update({k: v.asnumpy() for k, v in meta["optimizer"].items()})
    return arrays, meta


# ----------------------------------------------------------------------------- units


def test_lr_schedule():
    cfg = load_config("ipt_tiny", {"steps": 100, "lr_max": 5e-5, "lr_min": 2e-5})
    assert lr_at(0, cfg) == pytest.approx(5e-5)
    assert lr_at(50, cfg) == pytest.approx(3.5e-5)
    assert lr_at(100, cfg) == pytest.approx(2e-5)
    assert lr_at(25, cfg) > lr_at(26, cfg)
    cfg.lr_schedule = "constant"
    assert lr_at(0, cfg) == lr_at(99, cfg) == 2e-5
    cfg.lr_schedule = "step"
    with pytest.raises(TrainError):
        lr_at(0, cfg)


def _adam_numpy(p, g, m, v, t, lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0):
    """torch.optim.Adam, one step, float64."""
    g = g + wd * p
    t = t + 1
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    denom = np.sqrt(v) / np.sqrt(1 - b2 ** t) + eps
    return p - lr / (1 - b1 ** t) * m / denom, m, v, t


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_subset_adam_is_torch_adam_on_its_subset(weight_decay):
    rng = np.random.default_rng(0)
    init = {"a": rng.normal(size=(3, 4)), "b": rng.normal(size=(5,)), QUERY_NAME: rng.normal(size=(3, 6))}
    params = {n: Parameter(Tensor(v.astype(np.float32)), name=n) for n, v in init.items()}
    opt = SubsetAdam(list(params.values()), (0.9, 0.999), 1e-8, weight_decay, row_counted=(QUERY_NAME,))
    step_a = ms.jit(opt.step_cell([params["a"]], params[QUERY_NAME], row=1))
    step_b = ms.jit(opt.step_cell([params["b"]], params[QUERY_NAME], row=2))
    ref = {n: [v.copy(), np.zeros_like(v), np.zeros_like(v), 0] for n, v in init.items()}
    ref_rows = {1: [np.zeros(6), np.zeros(6), 0], 2: [np.zeros(6), np.zeros(6), 0]}

    def apply(name, g, lr):
        r = ref[name]
        r[0], r[1], r[2], r[3] = _adam_numpy(r[0], g, r[1], r[2], r[3], lr, wd=weight_decay)

    def apply_row(row, g, lr):
        q, (m, v, t) = ref[QUERY_NAME][0], ref_rows[row]
        q[row], m, v, t = _adam_numpy(q[row], g, m, v, t, lr, wd=weight_decay)
        ref_rows[row] = [m, v, t]

    for k, (name, row, fn) in enumerate([("a", 1, step_a), ("a", 1, step_a), ("a", 1, step_a), ("b", 2, step_b)]):
        lr = 1e-2 / (k + 1)
        g = rng.normal(size=init[name].shape)
        gq = np.zeros((3, 6))
        gq[row] = rng.normal(size=6)
        fn((Tensor(g.astype(np.float32)), Tensor(gq.astype(np.float32))), Tensor(lr, ms.float32))
        apply(name, g, lr)
        apply_row(row, gq[row], lr)
    for name in init:
        np.testing.assert_allclose(params[name].asnumpy(), ref[name][0], rtol=1e-5, atol=1e-6)
    # "b" was updated once, with its own step count: a first Adam step, not the fourth.
    assert opt.t["a"].asnumpy().tolist() == [3.0] and opt.t["b"].asnumpy().tolist() == [1.0]
    assert opt.t[QUERY_NAME].asnumpy().ravel().tolist() == [0.0, 3.0, 1.0]
    np.testing.assert_array_equal(params[QUERY_NAME].asnumpy()[0], init[QUERY_NAME][0].astype(np.float32))
    np.testing.assert_array_equal(opt.m[QUERY_NAME].asnumpy()[0], 0)
    state = opt.state()
    assert {"optimizer.m.a", "optimizer.v.b", f"optimizer.step.{QUERY_NAME}"} <= set(state)
    fresh = SubsetAdam(list(params.values()), row_counted=(QUERY_NAME,))
    fresh.load_state(state, "test")
    np.testing.assert_array_equal(fresh.v["a"].asnumpy(), opt.v["a"].asnumpy())
    with pytest.raises(CheckpointError, match="lacks"):
        fresh.load_state({k: v for k, v in state.items() if k != "optimizer.m.a"}, "test")


def test_clip_global_norm_is_torch_clip_grad_norm():
    rng = np.random.default_rng(1)
    grads = [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(7,)).astype(np.float32)]
    norm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads))
    clip = ms.jit(clip_global_norm)
    clipped = clip(tuple(Tensor(g) for g in grads), 1.0)
    for c, g in zip(clipped, grads):
        np.testing.assert_allclose(c.asnumpy(), g / (norm + 1e-6), rtol=1e-5)
    kept = clip(tuple(Tensor(g) for g in grads), float(norm * 2))
    for c, g in zip(kept, grads):
        np.testing.assert_allclose(c.asnumpy(), g, rtol=1e-6)


def test_refuses_non_empty_out_dir(tmp_path):
    cfg = load_config("ipt_tiny", {"out_dir": str(tmp_path)})
    assert prepare_out_dir(cfg, 0) is None  # empty: fresh run
    (tmp_path / "notes.txt").write_text("mine")
    old = tmp_path / "ipt_step00000004.ckpt"
    old.write_bytes(b"x")
    with pytest.raises(TrainError, match="not empty.*--resume true.*--overwrite true"):
        prepare_out_dir(cfg, 0)
    cfg.resume = True
    assert prepare_out_dir(cfg, 0) == old
    cfg.resume, cfg.overwrite = False, True
    assert prepare_out_dir(cfg, 0) is None
    assert not old.exists() and (tmp_path / "notes.txt").exists()  # only our checkpoints go


# ----------------------------------------------------------------------------- fine-tuning


def test_finetune_takes_body_and_the_tasks_head_tail_query(tiny_ckpt, tmp_path):
    cfg = load_config("ipt_tiny", {"train_mode": "finetune", "task": "denoise_30"})
    mcfg = model_config(cfg)
    model = IPT(mcfg)
    assert model.task_names == ("denoise_30",) and model.num_queries == 1
    load_pretrained_task(model, str(tiny_ckpt), mcfg)
    src, meta = read_checkpoint(tiny_ckpt)
    k = meta["ipt_tasks"].split(",").index("denoise_30")
    got = {p.name: p.asnumpy() for p in model.get_parameters()}
    np.testing.assert_array_equal(got["head.0.0.weight"], src[f"head.{k}.0.weight"].asnumpy())
    np.testing.assert_array_equal(got["tail.0.1.bias"], src[f"tail.{k}.1.bias"].asnumpy())
    np.testing.assert_array_equal(got[QUERY_NAME][0], src[QUERY_NAME].asnumpy()[k])
    np.testing.assert_array_equal(got["body.encoder.layers.1.linear2.weight"],
                                  src["body.encoder.layers.1.linear2.weight"].asnumpy())

    derain_cfg = model_config(load_config("ipt_tiny", {"train_mode": "finetune", "task": "derain"}))
    two = tmp_path / "two.ckpt"
    two_cfg = load_config("ipt_tiny", {"tasks": ["sr_x2", "denoise_30"]})
    save_checkpoint(IPT(two_cfg), two, two_cfg)
    with pytest.raises(CheckpointError, match=r"no 'derain' task \(it has: sr_x2, denoise_30\)"):
        load_pretrained_task(IPT(derain_cfg), str(two), derain_cfg)
    wide = model_config(load_config("ipt_tiny", {"train_mode": "finetune", "task": "denoise_30", "n_feats": 32}))
    with pytest.raises(CheckpointError, match="n_feats=16 but the config has n_feats=32"):
        load_pretrained_task(IPT(wide), str(tiny_ckpt), wide)


def test_warm_start_takes_another_tasks_body_head_and_fitting_tail(tmp_path):
    """sr_x4 from an sr_x2 run: everything but the x4 tail's second upsampling conv comes from the file,
    and the EMA of the run starts from those weights (not from the random initialisation)."""
    x2_cfg = model_config(load_config("ipt_tiny", {"train_mode": "finetune", "task": "sr_x2"}))
    ms.set_seed(5)
    x2 = IPT(x2_cfg)
    x2_file = tmp_path / "best_sr_x2.ckpt"
    save_checkpoint(x2, x2_file, x2_cfg)
    src = {p.name: p.asnumpy() for p in x2.get_parameters()}

    cfg = load_config("ipt_tiny", {"train_mode": "finetune", "task": "sr_x4", "init_from": str(x2_file),
                                   "out_dir": str(tmp_path / "run"), "ema_decay": 0.999})
    check_train_config(cfg)
    mcfg, model, trainer, start, _ = build_run(cfg, 0, 1)
    got = {p.name: p.asnumpy() for p in model.get_parameters()}
    assert start == 0 and set(src) < set(got)
    assert sorted(set(got) - set(src)) == ["tail.0.0.2.bias", "tail.0.0.2.weight"]
    for name in src:
        np.testing.assert_array_equal(got[name], src[name], err_msg=name)
    shadow = {p.name[len("ema."):]: p.asnumpy() for p in trainer.ema.shadow}
    np.testing.assert_array_equal(shadow["body.encoder.layers.0.linear1.weight"],
                                  src["body.encoder.layers.0.linear1.weight"])

    # the file's slot of this very task when it has it; a many-task file without it, or another width: refused
    assert load_warm_start(IPT(mcfg), str(x2_file), mcfg) == (len(src), 2)
    two = tmp_path / "two.ckpt"
    two_cfg = load_config("ipt_tiny", {"tasks": ["sr_x2", "denoise_30"]})
    save_checkpoint(IPT(two_cfg), two, two_cfg)
    with pytest.raises(CheckpointError, match="holds tasks sr_x2, denoise_30: --init_from takes a one-task"):
        load_warm_start(IPT(mcfg), str(two), mcfg)
    wide = model_config(load_config("ipt_tiny", {"train_mode": "finetune", "task": "sr_x4", "n_feats": 32}))
    with pytest.raises(CheckpointError, match="n_feats=16 but the config has n_feats=32"):
        load_warm_start(IPT(wide), str(x2_file), wide)
    with pytest.raises(TrainError, match="does not go with --pretrained"):
        check_train_config(load_config("ipt_tiny", {"train_mode": "finetune", "task": "sr_x4",
                                                    "init_from": str(x2_file), "pretrained": str(x2_file)}))
    with pytest.raises(TrainError, match="init_from checkpoint not found"):
        check_train_config(load_config("ipt_tiny", {"train_mode": "finetune", "task": "sr_x4",
                                                    "init_from": str(tmp_path / "nope.ckpt")}))


# ----------------------------------------------------------------------------- six-task pre-training


@pytest.fixture(scope="module")
def pretrain6():
    """18 steps of ipt_tiny on all six tasks (real images, high lr), snapshots around every step,
    and each task's L1 on a fixed held-out batch before and after."""
    cfg = load_config("ipt_tiny", {"batch_size": 4, "steps": 18, "seed": 6, "lr_max": 2e-3, "lr_min": 5e-4})
    ms.set_seed(cfg.seed)
    model = IPT(cfg)
    trainer = Trainer(cfg, model)
    batches = build_train_source(cfg, model.task_names)  # cfg.train_path: ../shared/datasets/train
    held_out = held_out_batches(batches, model.tasks)

    def snapshot():
        state = {p.name: p.asnumpy().copy() for p in model.get_parameters()}
        state.update({k: v.asnumpy() for k, v in trainer.optimizer.state().items()})
        return state

    l1_before = held_out_l1(model, held_out)
    records, before = [], snapshot()
    for step in range(cfg.steps):
        lr, hr, slot = batches[step]
        loss, l1, con = trainer.train_step(int(slot), lr, hr, lr_at(step, cfg))
        after = snapshot()
        changed = {n for n in after if not np.array_equal(after[n], before[n])}
        rows = [int(r) for r in np.flatnonzero(np.any(after[QUERY_NAME] != before[QUERY_NAME], axis=1))]
        records.append({"slot": int(slot), "loss": loss, "l1": l1, "con": con, "changed": changed, "rows": rows})
        before = after
    return model, records, l1_before, held_out_l1(model, held_out)


def test_pretraining_loss_falls_on_all_six_tasks(pretrain6):
    model, records, before, after = pretrain6
    LOG.info("held-out L1 before %s after %s", np.round(before, 1), np.round(after, 1))
    for slot, task in enumerate(model.task_names):
        assert sum(r["slot"] == slot for r in records) >= 2, task
        assert after[slot] < 0.8 * before[slot], f"{task}: held-out L1 {before[slot]:.2f} -> {after[slot]:.2f}"
    assert all(np.isfinite(r["loss"]) and r["con"] > 0 for r in records)


def test_a_step_trains_only_its_task(pretrain6):
    model, records, _, _ = pretrain6
    n = len(model.task_names)
    for r in records:
        s = r["slot"]
        weights = {c for c in r["changed"] if not c.startswith("optimizer.")}
        slots = [re.match(r"(?:optimizer\.(?:m|v|step)\.)?(?:head|tail)\.(\d+)\.", c) for c in r["changed"]]
        others = [m.group(0) for m in slots if m and int(m.group(1)) != s]
        assert not others, f"step of slot {s} changed {others[:3]}"
        assert {f"head.{s}.0.weight", f"tail.{s}.1.weight", "body.encoder.layers.0.linear1.weight",
                QUERY_NAME} <= weights
        assert r["rows"] == [s], f"query rows {r['rows']} moved in a step of slot {s}"
        assert not any(c.startswith(("sub_mean", "add_mean")) for c in r["changed"])
    assert {r["slot"] for r in records} == set(range(n))


# ----------------------------------------------------------------------------- resume and data parallel


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    """The uninterrupted reference run (6 steps, 2 tasks) in a fresh process."""
    out = tmp_path_factory.mktemp("run_a")
    proc = run_train(*RUN, "--out_dir", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_killed_and_resumed_run_ends_identical(run_a, tmp_path):
    out_a, proc_a = run_a
    assert [s for s, _ in list_checkpoints(out_a)] == [4, 6]  # keep_last 2
    out_b = tmp_path / "run_b"
    first = run_train(*RUN, "--out_dir", out_b, "--stop_after", "3")  # "killed" after step 3
    assert first.returncode == 0, first.stderr[-3000:]
    assert [s for s, _ in list_checkpoints(out_b)] == [2, 3]
    refused = run_train(*RUN, "--out_dir", out_b)
    assert refused.returncode == 2 and "not empty" in refused.stderr.strip().splitlines()[-1]
    second = run_train(*RUN, "--out_dir", out_b, "--resume", "true")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stderr and "ipt_step00000003.ckpt at step 3" in second.stderr
    a, meta_a = ckpt_arrays(out_a / "ipt_step00000006.ckpt")
    b, meta_b = ckpt_arrays(out_b / "ipt_step00000006.ckpt")
    assert set(a) == set(b) and any(k.startswith("optimizer.m.") for k in a)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert meta_a["step"] == meta_b["step"] == "6" and meta_a["lr"] == meta_b["lr"]
    digest = re.compile(r"weights digest (\w+)")
    assert digest.search(proc_a.stderr).group(1) == digest.search(second.stderr).group(1)
    losses = re.compile(r"step (\d+)/6 task (\w+) loss ([\d.]+)")
    tail_a = [m for m in losses.findall(proc_a.stderr) if int(m[0]) > 3]
    assert tail_a == losses.findall(second.stderr)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_two_workers_match_single_process(run_a, tmp_path):
    """msrun, 2 CPU workers (global batch 4 = 2 + 2): both ranks bit-identical, and equal to the
    single process that trained on all 4 samples per step (the contrastive term included)."""
    out_a, proc_a = run_a
    log_a = proc_a.stderr
    out_d, logs = tmp_path / "run_dp", tmp_path / "logs"
    env = dict(os.environ, LOG_DIR=str(logs), MASTER_PORT=str(_free_port()))
    proc = subprocess.run(["bash", "scripts/run_distribute_train.sh", "2", "ipt_tiny", *RUN[2:],
                           "--out_dir", str(out_d), "--threads", "1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    worker_logs = [(logs / f"worker_{r}.log").read_text() if (logs / f"worker_{r}.log").exists() else ""
                   for r in range(2)]
    assert proc.returncode == 0, (proc.stdout[-2000:], worker_logs[0][-2000:])
    digests = [re.search(rf"rank {r} finished at step 6, weights digest (\w+)", worker_logs[r]) for r in range(2)]
    assert all(digests), worker_logs[1][-2000:]
    assert digests[0].group(1) == digests[1].group(1)
    assert "step 1/6" not in worker_logs[1]  # only rank 0 reports
    # The same global batch per step: the logged global loss parts agree (printed to 4 decimals).
    parts = re.compile(r"step (\d+)/6 task (\w+) loss ([\d.]+) \(l1 ([\d.]+) contrastive ([\d.]+)\)")
    single, dist = parts.findall(log_a), parts.findall(worker_logs[0])
    assert [p[:2] for p in single] == [p[:2] for p in dist] and len(single) == 6
    np.testing.assert_allclose(np.array([p[2:] for p in dist], float), np.array([p[2:] for p in single], float),
                               rtol=1e-5, atol=2e-4)
    # Weights: equal up to float summation order. The gradients agree to ~1e-5 (relative norm) after a
    # step, but Adam divides by sqrt(v): an element whose gradient is a near-cancelling sum moves by
    # ~lr * sign(g), so a few elements may differ by a fraction of one step (lr_max = 1e-3).
    a, _ = ckpt_arrays(out_a / "ipt_step00000006.ckpt")
    d, _ = ckpt_arrays(out_d / "ipt_step00000006.ckpt")
    names = [k for k in a if not k.startswith("optimizer.")]
    worst = max(float(np.abs(d[k] - a[k]).max()) for k in names)
    rel = max(float(np.linalg.norm(d[k] - a[k]) / (np.linalg.norm(a[k]) + 1e-12)) for k in names)
    loose = sum(int((np.abs(d[k] - a[k]) > 1e-6 + 1e-4 * np.abs(a[k])).sum()) for k in names)
    total = sum(a[k].size for k in names)
    LOG.info("distributed vs single process: max abs weight difference %.2e, max relative norm %.2e, "
                "%d of %d elements beyond 1e-6 + 1e-4|w|", worst, rel, loose, total)
    assert worst < 1e-3 and rel < 1e-3 and loose < 1e-3 * total
