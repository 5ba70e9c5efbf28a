"""Data-parallel training: process-group setup and the all-gather of the contrastive tokens.

Data parallelism splits every global batch over the ranks; the contrastive term must see the
tokens of the whole global batch, so they are all-gathered (`GatherTokens`) and W ranks compute the
same gradients as one process on the combined batch. Gradients are averaged by MindSpore's
DistributedGradReducer in the train step (src/trainer.py).
"""
from __future__ import annotations

import os
from typing import Tuple

import mindspore as ms
from mindspore import nn, ops

from src.utils import setup_device


class GatherTokens(nn.Cell):
    """All-gather of the body tokens over the ranks, in rank order (= global sample order).

    Every rank then computes the same global contrastive loss, so the gradient for its own tokens
    is just its slice of the incoming gradient; it is scaled by the world size because the
    gradient reducer later averages over the ranks.
    """

    def __init__(self, rank: int, world_size: int) -> None:
        super().__init__()
        self.rank = rank
        self.world_size = world_size
        self.all_gather = ops.AllGather()

    def construct(self, x):
        return self.all_gather(x)

    def bprop(self, x, out, dout):
        n = x.shape[0]
        return (dout[self.rank * n:(self.rank + 1) * n] * self.world_size,)


def init_parallel(cfg) -> Tuple[int, int]:
    """Device setup, plus communication and data-parallel context when `distribute` is on.

    CPU/GPU runs are started by msrun (CPU uses mccl); Ascend also by a rank table with
    RANK_TABLE_FILE/DEVICE_ID/RANK_ID set per process. Returns (rank, world_size).
    """
    if not cfg.distribute:
        setup_device(cfg)
        return 0, 1
    from mindspore.communication import get_group_size, get_rank, init
    if cfg.device_target != "CPU":
        # Rank-table launch: DEVICE_ID per process; msrun: None lets MindSpore pick the local device.
        device = os.environ.get("DEVICE_ID")
        ms.set_context(mode=ms.GRAPH_MODE if cfg.mode == "GRAPH" else ms.PYNATIVE_MODE)
        ms.set_device(cfg.device_target, int(device) if device is not None else None)
    else:
        setup_device(cfg)
    init()
    rank, world = get_rank(), get_group_size()
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=world)
    return rank, world


class _AllGather(nn.Cell):
    def __init__(self) -> None:
        super().__init__()
        self.gather = ops.AllGather()

    def construct(self, x):
        return self.gather(x)


def ranks_disagree(digest: str, world_size: int) -> list:
    """The ranks whose ``digest`` (hex) differs from rank 0's; every rank gets the same answer.

    Each rank may read its training data from its own disk (multi-node without a shared file
    system), so their indexes are compared before the first step rather than assumed equal. The
    digest travels as 16-bit words in float32 (exact), through one all-gather.
    """
    if world_size == 1:
        return []
    import numpy as np
    from mindspore import Tensor
    words = np.array([[int(digest[i:i + 4], 16) for i in range(0, 32, 4)]], dtype=np.float32)
    everyone = _AllGather()(Tensor(words)).asnumpy().reshape(world_size, -1)
    return [r for r in range(world_size) if not np.array_equal(everyone[r], everyone[0])]
