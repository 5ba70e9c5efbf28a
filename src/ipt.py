"""The IPT network: per-task heads and tails around one shared transformer body.

A model holds one or several tasks (`cfg.tasks`), each in a slot with its own head, tail and query
embedding. `model.task_net('sr_x2')` returns a cell that runs that task alone; it is created once
and cached, so in GRAPH_MODE each task's graph is compiled once and reused for every call.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import mindspore as ms
from mindspore import nn, ops, Parameter

from src.common import MeanShift, make_head, make_tail
from src.conv import choose_formulation
from src.flops import body_gflop
from src.slots import slot_of
from src.tasks import Task, get_task, get_tasks
from src.transformer import VisionTransformer, count_parameters, layers_share_one_graph


class IPT(nn.Cell):
    """Image Processing Transformer (Chen et al., CVPR 2021), parameter names as the official model."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.tasks: Tuple[Task, ...] = get_tasks(cfg.tasks)
        num_queries = cfg.num_queries if cfg.num_queries else len(self.tasks)
        if num_queries not in (1, len(self.tasks)):
            raise ValueError(f"num_queries {num_queries} must be 1 or the number of tasks ({len(self.tasks)})")
        self.num_queries = num_queries
        self.patch_size = cfg.patch_size
        choose_formulation(cfg.device_target, body_gflop(cfg))  # once per process, before any kernel
        n_feats, n_colors = cfg.n_feats, cfg.n_colors
        self.sub_mean = MeanShift(cfg.rgb_range, -1)
        self.add_mean = MeanShift(cfg.rgb_range, +1)
        self.head = nn.CellList([make_head(n_colors, n_feats) for _ in self.tasks])
        self.body = VisionTransformer(
            img_dim=cfg.patch_size, patch_dim=cfg.patch_dim, num_channels=n_feats,
            num_heads=cfg.num_heads, num_layers=cfg.num_layers, num_queries=num_queries,
            dropout_rate=cfg.dropout_rate, no_norm=cfg.no_norm, no_mlp=cfg.no_mlp,
            pos_every=cfg.pos_every, no_pos=cfg.no_pos, out_proj_bias=cfg.out_proj_bias,
            share_layer_graph=layers_share_one_graph(cfg.device_target, cfg.dropout_rate))
        self.tail = nn.CellList([make_tail(t.scale, n_feats, n_colors) for t in self.tasks])
        self._task_nets: Dict[Tuple[str, bool], "TaskNet"] = {}
        self.amp_level = "O0"        # set by src/precision.apply_precision
        self.low_precision = False   # O2/O3: forward_slot returns the low dtype

    @property
    def task_names(self) -> Tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    def slot(self, task: str) -> int:
        """The slot of a task in this model, or a one-line error if the model lacks it."""
        get_task(task)
        if task not in self.task_names:
            raise ValueError(f"this model has no '{task}' task (it has: {', '.join(self.task_names)})")
        return self.task_names.index(task)

    def task_net(self, task: str, with_tokens: bool = False) -> "TaskNet":
        """The cached single-task forward cell (one compiled graph per task)."""
        key = (task, with_tokens)
        if key not in self._task_nets:
            self._task_nets[key] = TaskNet(self, self.slot(task), with_tokens)
        return self._task_nets[key]

    def slot_params(self, slot: int) -> List[Parameter]:
        """The trainable parameters task `slot` runs on: the shared ones (body, query table) and its
        own head and tail, in the model's order (a train step of the task updates exactly these)."""
        return [p for p in self.trainable_params() if slot_of(p.name) in (None, slot)]

    def forward_slot(self, x, slot: int):
        """(B, 3, 48, 48) in 0..rgb_range -> ((B, 3, 48s, 48s), body tokens (B, L, E))."""
        x = self.sub_mean(x)
        x = self.head[slot](x)
        res, tokens = self.body(x, slot if self.num_queries > 1 else 0)
        x = self.tail[slot](res + x)
        return self.add_mean(x), tokens

    def construct(self, x):
        """A single-task model's forward; multi-task models are run through `task_net`."""
        return self.forward_slot(x, 0)[0]

    def num_parameters(self) -> int:
        return count_parameters(self)


class TaskNet(nn.Cell):
    """One task of an IPT model: shares the model's parameters, compiles to its own graph.

    Its outputs are float32 at every precision level (as amp's _OutputTo32 makes them), so the loss
    and the tiler always see float32.
    """

    def __init__(self, model: IPT, slot: int, with_tokens: bool) -> None:
        super().__init__(auto_prefix=False)  # keep the model's parameter names
        self.model = model
        self.slot = slot
        self.with_tokens = with_tokens
        self.task = model.tasks[slot]

    def construct(self, x):
        out, tokens = self.model.forward_slot(x, self.slot)
        if self.model.low_precision:
            out = ops.functional.mixed_precision_cast(ms.float32, out)
            tokens = ops.functional.mixed_precision_cast(ms.float32, tokens)
        if self.with_tokens:
            return out, tokens
        return out

