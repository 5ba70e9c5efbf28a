"""The compiled train graph holds no per-element index tables (docs/DEV_NOTES.md, memory on CPU).

MindSpore's CPU kernels of implicitly broadcasting binary ops (16 bytes per output element) and of
Transpose (8 bytes per element) keep index tables for as long as the graph lives, and training
holds one graph per task: src/common.expand_to, the transformer's head layout and its softmax
backward avoid them. These tests read the compiled graph of an ipt_tiny train step (MindSpore's
own IR dump, in a child process) and fail when such an op comes back on a large tensor.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "RealDiv", "Maximum", "Minimum", "Select", "Pow"}
LARGE = 65536  # elements: the query table's Adam rows and everything per sample are above this
COMPILE = """
import sys
import numpy as np, mindspore as ms
from mindspore import Tensor
sys.path.insert(0, {root!r})
from src.config import load_config
from src.conv import set_formulation
from src.ipt import IPT
from src.trainer import Trainer
from src.utils import setup_device
cfg = load_config("ipt_tiny", {{"batch_size": 2, "device_target": "CPU", "mode": "GRAPH", "threads": 1}})
setup_device(cfg)
set_formulation({formulation!r})
net = IPT(cfg)
trainer = Trainer(cfg, net)
step = trainer.step_fn(net.slot("sr_x2"))
step.compile(Tensor(np.zeros((2, 3, 48, 48), np.float32)), Tensor(np.zeros((2, 3, 96, 96), np.float32)),
             Tensor(1e-4, ms.float32))
"""


def _elements(shape: str) -> int:
    n = 1
    for dim in shape.split(","):
        if dim.strip():
            n *= int(dim)
    return n


@pytest.fixture(scope="module", params=["native", "im2col"])
def train_graph_ops(request, tmp_path_factory):
    """(op, input shapes, output shapes) of every node of the compiled sr_x2 train graph, with each
    convolution formulation (src/conv.py: ipt_tiny runs native on AVX-512, IPT-base im2col)."""
    out = tmp_path_factory.mktemp("ir")
    env = dict(os.environ, MS_DEV_SAVE_GRAPHS="1", MS_DEV_SAVE_GRAPHS_PATH=str(out))
    proc = subprocess.run([sys.executable, "-c", COMPILE.format(root=str(ROOT), formulation=request.param)], cwd=out, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    built = sorted(out.rglob("graph_build_*.ir"))
    assert built, f"MindSpore wrote no graph_build IR under {out}"
    lines = built[-1].read_text().splitlines()
    nodes = []
    for i, line in enumerate(lines[:-1]):
        match = re.match(r"\s+%\d+\([^)]*\) = (?:PrimFunc_)?([A-Za-z]+)\(", line)
        if not match or "->" not in lines[i + 1]:
            continue
        inputs, outputs = lines[i + 1].split("->", 1)
        nodes.append((match.group(1), re.findall(r"Tensor\[\w+\], \(([^)]*)\)", inputs),
                      re.findall(r"Tensor\[\w+\], \(([^)]*)\)", outputs)))
    assert len(nodes) > 500, "the IR parser found too few nodes: has MindSpore's IR format changed?"
    return nodes


def test_the_parser_sees_the_graph(train_graph_ops):
    ops = {op for op, _, _ in train_graph_ops}
    assert {"BatchMatMul", "Softmax", "Adam", "Concat", "Split"} <= ops


def test_no_implicit_broadcast_on_large_tensors(train_graph_ops):
    offenders = [(op, ins, outs) for op, ins, outs in train_graph_ops
                 if op in ELEMENTWISE and len(set(s for s in ins if s)) > 1 and outs
                 and _elements(outs[0]) >= LARGE]
    assert not offenders, f"implicitly broadcasting ops (index tables for the graph's life): {offenders[:5]}"


def test_no_transpose_in_the_attention(train_graph_ops):
    """Head split/merge used to transpose (B, L, heads, d) and (B, L, parts, heads, d) (batch 2
    first). Still transposed, once per graph: the token (un)folding and pixel shuffle (6-D), and
    im2col's weights (O, C, k, k), which do not grow with the batch."""
    attention = [(ins, outs) for op, ins, outs in train_graph_ops
                 if op == "Transpose" and ins and len(ins[0].split(",")) in (4, 5)
                 and ins[0].split(",")[0].strip() == "2"]
    assert not attention, f"attention transposes: {attention[:5]}"


def test_no_slice_per_head_in_the_attention_backward(train_graph_ops):
    """The head moves have their own backward (transformer._HeadMove: one Split + one Concat):
    MindSpore's Concat gradient is one Slice per input, 4 per head move in ipt_tiny (~1700 in an
    IPT-base train graph, each kept compiled for the graph's life). ipt_tiny, batch 2: 4 heads."""
    per_head = [(op, ins, outs) for op, ins, outs in train_graph_ops if op == "Slice" and ins and outs
                and ins[0].split(",")[0].strip() == "8" and outs[0].split(",")[0].strip() == "2"]
    assert not per_head, f"Slices of a head off the batch axis: {per_head[:3]}"
