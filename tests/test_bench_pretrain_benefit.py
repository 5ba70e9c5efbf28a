"""bench/bench_pretrain_benefit.py: equal-compute arms, the launcher, the table and its verdicts (no training)."""
import json

import pytest
from tests.conftest import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench/bench_pretrain_benefit.py")


def _args(bench, *extra):
    return bench.parse_args(["--pretrain_steps", "60", "--finetune_steps", "30", *extra])


def test_every_arm_gets_p_plus_f_steps_and_finetunes_start_from_their_pretraining(bench, tmp_path):
    args = _args(bench, "--seeds", "1,2", "--targets", "sr_x2,denoise_30")
    runs = bench.plan(args, tmp_path, "T", "V")
    assert len(runs) == 2 * (2 + 3 * 2)
    scored = [r for r in runs if r.task]
    for r in scored:
        pre = r.needs.steps if r.needs else 0
        assert pre + r.steps == 90, r.name
        assert (r.arm == "scratch") == (r.needs is None)
        assert "--seed" in r.args and r.args[r.args.index("--seed") + 1] == str(r.seed)
        assert r.args[r.args.index("--contrastive_weight") + 1] == "0"  # L1-only fine-tuning
    pre_con = {r.name: r.args[r.args.index("--contrastive_weight") + 1] for r in runs if not r.task}
    assert pre_con == {"pretrain_s1": "0.1", "pretrain_nocon_s1": "0.0", "pretrain_s2": "0.1", "pretrain_nocon_s2": "0.0"}
    ft = next(r for r in scored if r.name == "sr_x2_pretrain_nocon_s2")
    assert ft.needs.name == "pretrain_nocon_s2"
    cmd = bench.command(ft, args)
    assert cmd[1:4] == ["train.py", "--config", "ipt_tiny"]
    assert cmd[-2:] == ["--pretrained", str(tmp_path / "pretrain_nocon_s2" / "ipt_step00000060.ckpt")]
    dist = bench.command(ft, _args(bench, "--launcher", "bash scripts/run_distribute_train.sh 8", "--config", "default_config.yaml"))
    assert dist[:4] == ["bash", "scripts/run_distribute_train.sh", "8", "default_config.yaml"]


def _record(task, arm, seed, y, rgb):
    return {"task": task, "arm": arm, "seed": seed, "set": "Set5", "psnr_y": y, "ssim_y": 0.9,
            "psnr_rgb": rgb, "ssim_rgb": 0.8, "best_val_psnr": y - 2}


def test_table_reports_a_difference_only_beyond_the_seed_spread(bench, tmp_path):
    records = [_record("sr_x2", "pretrain", 1, 34.0, 32.0), _record("sr_x2", "pretrain", 2, 34.2, 32.2),
               _record("sr_x2", "scratch", 1, 34.5, 32.05), _record("sr_x2", "scratch", 2, 34.7, 32.15),
               _record("sr_x2", "pretrain_nocon", 1, 34.05, 31.0), _record("sr_x2", "pretrain_nocon", 2, 34.25, 31.2)]
    settings = {"pretrain_steps": 60, "finetune_steps": 30, "batch_size": 8, "config": "ipt_tiny",
                "seeds": [1, 2], "targets": ["sr_x2"]}
    text = bench.table(records, {"sr_x2": {"set": "Set5", "psnr_y": 33.7, "ssim_y": 0.93, "psnr_rgb": 31.8,
                                           "ssim_rgb": 0.91}}, settings)
    assert "| sr_x2 | Set5 | (a) six-task pre-training + fine-tuning | 2 | 34.10 ± 0.10 |" in text
    assert "pre-training (a) - scratch (b): Y -0.50 dB (beyond the seed spread of ±0.20 dB); RGB no difference" in text
    assert "contrastive term (a) - (c): Y no difference (-0.05 dB" in text and "RGB +1.00 dB (beyond" in text
    saved = tmp_path / "pb.json"
    saved.write_text(json.dumps({"settings": settings, "records": records, "baselines": {}}))
    assert bench.main(["--table_only", "--json", str(saved)]) == 0


def test_bad_arguments(bench, tmp_path):
    with pytest.raises(SystemExit):
        bench.parse_args(["--targets", "sr_x5"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--seeds", "one"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--table_only"])
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(SystemExit):
        bench.parse_args(["--json", str(tmp_path / "x.json")])
    # a training folder without the default held-out images and no --val_path: one line, exit 2
    assert bench.main(["--train_path", str(tmp_path), "--out_dir", str(tmp_path / "out"), "--dry_run"]) == 2
