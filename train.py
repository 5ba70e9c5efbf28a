"""Pre-train IPT on all tasks, or fine-tune it on one; the loop is src/train_loop.py, the step src/trainer.py.

    python train.py --config ipt_tiny --steps 1000 --out_dir runs/tiny
    python train.py --train_mode finetune --task sr_x2 --pretrained runs/pre/ipt_step00300000.ckpt \\
        --lr_schedule constant --out_dir runs/sr_x2
    python train.py --train_mode finetune --task sr_x4 --init_from runs/sr_x2/best_sr_x2.ckpt \
        --out_dir runs/sr_x4                                   # warm start from another task's weights
    python train.py --out_dir runs/tiny --resume true          # continue the newest checkpoint
    bash scripts/run_distribute_train.sh 2 ipt_tiny --steps 100  # data parallel (msrun)

Checkpoints `ipt_step{N:08d}.ckpt` (weights, optimizer state, step/seed/lr) go to `out_dir`; a
fresh run refuses a non-empty `out_dir` unless `--resume true` or `--overwrite true`.
"""
from __future__ import annotations

from src.checkpoint import CheckpointError
from src.config import parse_cli
from src.train_loop import fit
from src.trainer import TrainError
from src.utils import fail, run_command, setup_logging


def main(argv=None) -> int:
    cfg = parse_cli(argv, description=__doc__.splitlines()[0])
    setup_logging(cfg.log_level)
    try:
        fit(cfg)
    except (TrainError, CheckpointError) as err:
        fail(str(err))
    return 0


if __name__ == "__main__":
    run_command(main)
