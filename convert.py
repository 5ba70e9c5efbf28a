"""Convert an official PyTorch IPT checkpoint (.pt) into a MindSpore .ckpt this project loads.

    python convert.py --src IPT_sr2.pt --dst ipt_sr_x2.ckpt --task sr_x2
    python convert.py --src IPT_pretrain.pt --dst ipt_pretrain.ckpt

The .pt is read by a restricted reader (no arbitrary unpickling, no torch needed). A single-task
file needs --task (sr_x2, sr_x3, sr_x4, denoise_30, denoise_50, derain); the six-task
pre-training file is converted with all six tasks unless --tasks chooses some.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from src.checkpoint import save_checkpoint
from src.config import parse_cli
from src.convert_weights import ConversionError, convert_state_dict, file_slots
from src.ipt import IPT
from src.pt_reader import load_pt_state_dict
from src.utils import check_output_file, fail, run_command, setup_logging

LOG = logging.getLogger("convert")


def main(argv=None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--src", required=True, help="official .pt / .pth file")
    pre.add_argument("--dst", required=True, help="output .ckpt")
    args, rest = pre.parse_known_args(argv)
    explicit_task = any(a in ("--task",) or a.startswith("--task=") for a in rest)
    explicit_tasks = any(a in ("--tasks",) or a.startswith("--tasks=") for a in rest)
    cfg = parse_cli(rest, description=__doc__)
    setup_logging(cfg.log_level)
    src, dst = Path(args.src), Path(args.dst)
    check_output_file(dst, "dst", cfg.overwrite)
    try:
        state = load_pt_state_dict(src)
        if file_slots(state) == 1:
            if not explicit_task:
                raise ConversionError(f"{src} holds one task: say which with --task "
                                      "(sr_x2, sr_x3, sr_x4, denoise_30, denoise_50, derain)")
            cfg.tasks, cfg.num_queries = [cfg.task], 1
        elif explicit_task and not explicit_tasks:
            cfg.tasks = [cfg.task]
        model = IPT(cfg)
        expected = {p.name: tuple(p.shape) for p in model.get_parameters()}
        params = convert_state_dict(state, expected, list(cfg.tasks),
                                    cfg.task if explicit_task else None)
    except ConversionError as err:
        fail(f"{src}: {err}")
    except (ValueError, OSError) as err:  # the reader's errors name the file already
        fail(str(err))
    save_checkpoint(params, dst, cfg, tasks=tuple(cfg.tasks))
    LOG.info("wrote %s: %d parameters, tasks %s", dst, len(params), ",".join(cfg.tasks))
    return 0


if __name__ == "__main__":
    run_command(main)
