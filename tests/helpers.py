"""Small helpers shared by test modules (fixtures live in conftest.py)."""
import numpy as np
from mindspore import Tensor


def held_out_batches(batches, tasks, n: int = 4):
    """A fixed (lr, hr) batch of n samples per task, drawn outside the training streams."""
    held_out = []
    for task in tasks:
        pairs = [batches.source.sample(task, np.random.default_rng([99, j])) for j in range(n)]
        held_out.append([np.stack(x).transpose(0, 3, 1, 2).astype(np.float32) for x in zip(*pairs)])
    return held_out


def held_out_l1(model, held_out):
    """Each task's L1 on its held-out batch, with the model's current weights."""
    return [float(np.abs(model.task_net(t.name)(Tensor(lr)).asnumpy() - hr).mean())
            for t, (lr, hr) in zip(model.tasks, held_out)]
