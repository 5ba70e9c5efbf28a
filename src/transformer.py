"""IPT's shared transformer body: 3x3-patch tokens of the feature map, encoder, task-queried decoder.

Faithful to the official `VisionTransformer` (see ../shared/ipt_reference/ARCHITECTURE.md) in what
it computes and in its parameter names and layouts (`in_proj_weight` packs q|k|v, norms are
`weight`/`bias`), but laid out batch-first with attention written as plain matmul/softmax: on CPU
this is about 5x faster than `nn.MultiheadAttention` and exports to MindIR/ONNX with any batch.
"""
from __future__ import annotations

import math

import numpy as np
from mindspore import lazy_inline, nn, ops, Parameter
from mindspore.common.initializer import initializer, HeUniform, XavierUniform, Normal

from src.common import LayerNorm, cpu_backwards, dropout, expand_to, row_sums, spread_rows


class MatMul(nn.Cell):
    """A matmul primitive in a cell of its own, so the mixed-precision policy (src/precision.py)
    can list it: MindSpore's O1 white list names MatMul/BatchMatMul, but `to_float` works on cells."""

    def __init__(self, transpose_b: bool = False, batch: bool = False) -> None:
        super().__init__()
        self.op = ops.BatchMatMul(transpose_b=transpose_b) if batch else ops.MatMul(transpose_b=transpose_b)

    def construct(self, x, y):
        return self.op(x, y)


class _LastAxisSoftmax(nn.Cell):
    """ops.Softmax(axis=-1) with its backward, dout * out - out * sum(dout * out), written without
    implicit broadcasting and with its row sums as matmuls.

    MindSpore's own backward leaves the subtraction to an implicitly broadcasting Sub, whose CPU
    kernel keeps per-element index tables (16 bytes per element, 32 MB per attention map of
    ipt_tiny at batch 8) as long as the compiled train graph lives, and training holds one graph
    per task (see src/common.expand_to). Its ReduceSum and a BroadcastTo of the row sums took 11 ms
    per IPT-base attention map at batch 2 (Zen 4); `row_sums` and `spread_rows` take 4 ms.
    """

    def __init__(self) -> None:
        super().__init__()
        self.op = ops.Softmax(axis=-1)

    def construct(self, x):
        return self.op(x)

    def bprop(self, x, out, dout):
        shape = out.shape
        n = shape[-1]
        weighted = dout * out
        sums = spread_rows(row_sums(weighted.reshape(-1, n)), n).reshape(shape)
        return (weighted - sums * out,)


class Softmax(nn.Cell):
    """Softmax over the last axis as a cell: the O2 black list keeps it in float32 (its casts stay
    outside the custom backward of the inner cell, which sees one dtype)."""

    def __init__(self) -> None:
        super().__init__()
        self.op = _LastAxisSoftmax() if cpu_backwards() else ops.Softmax(axis=-1)

    def construct(self, x):
        return self.op(x)


class _HeadMove(nn.Cell):
    """Moves attention heads between the last axis and the batch axis (no Transpose: MindSpore's CPU
    Transpose keeps an 8-byte index per element for as long as the compiled graph lives, and
    training holds one graph per task; Split and Concat keep nothing).

    The backward is the inverse move, one Split and one Concat: MindSpore's own gradient of a Concat
    is one Slice per input (IPT-base: ~1700 Slice nodes in a train graph, whose compiled form
    stays in memory). A split's whole tuple goes to one concat (slicing it makes the backward add
    zeros for the other entries), except for an ONNX export (`_items`, `for_onnx_export`)."""

    def __init__(self, num_heads: int, to_batch: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.onnx_export = False  # set by for_onnx_export
        # (B, L, heads*d) <-> (heads*B, L, d); positive axes: the ONNX exporter's Split takes no -1
        last, first = ops.Split(axis=2, output_num=num_heads), ops.Split(axis=0, output_num=num_heads)
        self.split_in, self.split_out = (last, first) if to_batch else (first, last)
        self.axis_in, self.axis_out = (0, 2) if to_batch else (2, 0)

    def _items(self, parts):
        """A split's outputs: the tuple itself, or (ONNX export) its items one by one, since
        MindSpore's ONNX exporter names the outputs of a Split fed whole to a Concat wrongly and
        the .onnx file does not load."""
        if self.onnx_export:
            return [parts[h] for h in range(self.num_heads)]
        return parts

    def construct(self, x):
        return ops.concat(self._items(self.split_in(x)), self.axis_in)

    def bprop(self, x, out, dout):
        return (ops.concat(self.split_out(dout), self.axis_out),)


class MultiheadAttention(nn.Cell):
    """Multi-head attention without input bias, torch layout: `in_proj_weight` (3E, E) = [Wq; Wk; Wv]."""

    def __init__(self, dim: int, num_heads: int, dropout_rate: float, out_bias: bool,
                 kaiming_init: bool) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        init = HeUniform(negative_slope=math.sqrt(5)) if kaiming_init else XavierUniform()
        self.in_proj_weight = Parameter(initializer(init, (3 * dim, dim)), name="in_proj_weight")
        self.out_proj = nn.Dense(dim, dim, has_bias=out_bias)
        self.attn_drop = dropout(dropout_rate)
        self.matmul_t = MatMul(transpose_b=True)
        self.bmm_t = MatMul(transpose_b=True, batch=True)
        self.bmm = MatMul(batch=True)
        self.softmax = Softmax()
        self.slice = ops.Slice()
        self.heads_to_batch = _HeadMove(num_heads, to_batch=True)
        self.batch_to_heads = _HeadMove(num_heads, to_batch=False)

    def _project(self, x, start: int, stop: int):
        """x (B, L, E) times rows [start, stop) of in_proj_weight, transposed: (B*L, stop-start).

        The whole weight is used as is: on CPU a full-range StridedSlice of the (3E, E) weight
        takes a slow path (about 60 ms per call at IPT-base size, vs 0.3 ms for a part of it).
        The part is cut with the Slice primitive (a contiguous copy; StridedSlice took 2.5x longer
        on CPU), not `weight[start:stop]`: under mixed precision (`to_float`) MindSpore 2.10 casts
        a Parameter fed to a primitive, but not one indexed with [] (MatMul then gets a float32
        weight and float16 tokens)."""
        b, l, e = x.shape
        if (start, stop) == (0, 3 * self.dim):
            w = self.in_proj_weight
        else:
            w = self.slice(self.in_proj_weight, (start, 0), (stop - start, e))
        return self.matmul_t(x.reshape(b * l, e), w)

    def _heads(self, x, b: int, l: int, parts: int = 1):
        """(B*L, parts*E) projections -> `parts` tensors (heads*B, L, head_dim), head-major."""
        x = x.reshape(b, l, parts * self.dim)
        split = ops.split(x, self.dim, axis=-1) if parts > 1 else (x,)
        return tuple(self.heads_to_batch(part) for part in split)

    def _attend_heads(self, q, k, v, b: int, lq: int):
        """q, k, v: (heads*B, L, head_dim), head-major: each attention is one BatchMatMul, one softmax
        and one more BatchMatMul whatever the head count. The output's heads are split off the
        batch axis and concatenated on the last, in order."""
        attn = self.attn_drop(self.softmax(self.bmm_t(q * self.scale, k)))
        out = self.batch_to_heads(self.bmm(attn, v))
        return self.out_proj(out.reshape(b * lq, self.dim)).reshape(b, lq, self.dim)

    def self_attend(self, x):
        """q = k = v = x, one fused projection."""
        b, l, _ = x.shape
        q, k, v = self._heads(self._project(x, 0, 3 * self.dim), b, l, 3)
        return self._attend_heads(q, k, v, b, l)

    def shared_qk_attend(self, qk_in, v_in):
        """q = k = qk_in (e.g. tokens + query embedding), v = v_in."""
        b, l, _ = qk_in.shape
        e = self.dim
        q, k = self._heads(self._project(qk_in, 0, 2 * e), b, l, 2)
        (v,) = self._heads(self._project(v_in, 2 * e, 3 * e), b, l)
        return self._attend_heads(q, k, v, b, l)

    def construct(self, q_in, k_in, v_in):
        b, lq, _ = q_in.shape
        lk = k_in.shape[1]
        e = self.dim
        (q,) = self._heads(self._project(q_in, 0, e), b, lq)
        (k,) = self._heads(self._project(k_in, e, 2 * e), b, lk)
        (v,) = self._heads(self._project(v_in, 2 * e, 3 * e), b, lk)
        return self._attend_heads(q, k, v, b, lq)


def for_onnx_export(net: nn.Cell) -> None:
    """Build `net`'s attention for MindSpore's ONNX exporter (see _HeadMove._items); the same
    arithmetic, for graphs compiled after this call."""
    for _, cell in net.cells_and_names():
        if isinstance(cell, _HeadMove):
            cell.onnx_export = True


class EncoderLayer(nn.Cell):
    """Pre-norm: s += SelfAttn(LN1(s)); s += FFN(LN2(s))."""

    def __init__(self, dim: int, heads: int, hidden: int, dropout_rate: float, no_norm: bool,
                 out_bias: bool) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(dim, heads, dropout_rate, out_bias, kaiming_init=True)
        self.linear1 = nn.Dense(dim, hidden)
        self.linear2 = nn.Dense(hidden, dim)
        self.norm1 = nn.Identity() if no_norm else LayerNorm(dim)
        self.norm2 = nn.Identity() if no_norm else LayerNorm(dim)
        self.dropout = dropout(dropout_rate)
        self.dropout1 = dropout(dropout_rate)
        self.dropout2 = dropout(dropout_rate)
        self.relu = nn.ReLU()

    def construct(self, src, pos):
        x = self.norm1(src)
        if pos is None:
            x = self.self_attn.self_attend(x)
        else:
            x = self.self_attn.shared_qk_attend(x + pos, x)
        src = src + self.dropout1(x)
        x = self.linear2(self.dropout(self.relu(self.linear1(self.norm2(src)))))
        return src + self.dropout2(x)


class DecoderLayer(nn.Cell):
    """Pre-norm: self-attention with the task query, cross-attention to the encoder output, FFN."""

    def __init__(self, dim: int, heads: int, hidden: int, dropout_rate: float, no_norm: bool,
                 out_bias: bool) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(dim, heads, dropout_rate, out_bias, kaiming_init=False)
        self.multihead_attn = MultiheadAttention(dim, heads, dropout_rate, out_bias, kaiming_init=False)
        self.linear1 = nn.Dense(dim, hidden)
        self.linear2 = nn.Dense(hidden, dim)
        self.norm1 = nn.Identity() if no_norm else LayerNorm(dim)
        self.norm2 = nn.Identity() if no_norm else LayerNorm(dim)
        self.norm3 = nn.Identity() if no_norm else LayerNorm(dim)
        self.dropout = dropout(dropout_rate)
        self.dropout1 = dropout(dropout_rate)
        self.dropout2 = dropout(dropout_rate)
        self.dropout3 = dropout(dropout_rate)
        self.relu = nn.ReLU()

    def construct(self, tgt, memory, pos, query_pos):
        x = self.norm1(tgt)
        if query_pos is None:
            x = self.self_attn.self_attend(x)
        else:
            x = self.self_attn.shared_qk_attend(x + query_pos, x)
        tgt = tgt + self.dropout1(x)
        x = self.norm2(tgt)
        q = x if query_pos is None else x + query_pos
        k = memory if pos is None else memory + pos
        tgt = tgt + self.dropout2(self.multihead_attn(q, k, memory))
        x = self.linear2(self.dropout(self.relu(self.linear1(self.norm3(tgt)))))
        return tgt + self.dropout3(x)


def layers_share_one_graph(device_target: str, dropout_rate: float) -> bool:
    """Whether the encoder and decoder layers are compiled as one graph each, inlined per layer
    (`mindspore.lazy_inline`, policy "front"). On CPU that halves the compile time and lowers the
    train step's peak (IPT-base, batch 2: 3.61 -> 3.28 GB) with bit-identical numbers
    (docs/DEV_NOTES.md). Ascend is the platform MindSpore documents it for; GPU is untested, so off.
    Not with dropout: the layers would share one graph's random ops."""
    return str(device_target) in ("CPU", "Ascend") and dropout_rate == 0


class _SharedGraphEncoderLayer(EncoderLayer):
    """An EncoderLayer whose graph is compiled once for all layers (`layers_share_one_graph`)."""

    @lazy_inline(policy="front")
    def __init__(self, *args) -> None:
        super().__init__(*args)


class _SharedGraphDecoderLayer(DecoderLayer):
    """A DecoderLayer whose graph is compiled once for all layers (`layers_share_one_graph`)."""

    @lazy_inline(policy="front")
    def __init__(self, *args) -> None:
        super().__init__(*args)


class _Stack(nn.Cell):
    """Holds `layers` so names read `encoder.layers.3....` as in torch."""

    def __init__(self, layers) -> None:
        super().__init__()
        self.layers = nn.CellList(layers)


class Table(nn.Cell):
    """A learned table with torch Embedding's parameter name (`weight`), read by plain indexing."""

    def __init__(self, rows: int, cols: int) -> None:
        super().__init__()
        self.weight = Parameter(initializer(Normal(1.0), (rows, cols)), name="weight")


class PositionEncoding(nn.Cell):
    """Learned position embedding, one row per token (`position_encoding.pe.weight`)."""

    def __init__(self, num_tokens: int, dim: int) -> None:
        super().__init__()
        self.pe = Table(num_tokens, dim)


def _copy_layer_weights(layers) -> None:
    """Make every layer start equal to the first, as the official code's deepcopy clones do."""
    first = dict(layers[0].parameters_and_names())
    for layer in layers[1:]:
        for name, param in layer.parameters_and_names():
            param.set_data(first[name].data.copy())


class VisionTransformer(nn.Cell):
    """The body: (B, C, 48, 48) features -> same shape, plus the output tokens for the contrastive loss."""

    def __init__(self, img_dim: int, patch_dim: int, num_channels: int, num_heads: int, num_layers: int,
                 num_queries: int, dropout_rate: float = 0.0, no_norm: bool = False,
                 no_mlp: bool = False, pos_every: bool = False, no_pos: bool = False,
                 out_proj_bias: bool = False, share_layer_graph: bool = False) -> None:
        super().__init__()
        if img_dim % patch_dim:
            raise ValueError(f"patch_size {img_dim} is not a multiple of patch_dim {patch_dim}")
        self.img_dim = img_dim
        self.patch_dim = patch_dim
        self.grid = img_dim // patch_dim
        self.num_tokens = self.grid ** 2
        self.channels = num_channels
        self.dim = num_channels * patch_dim ** 2
        hidden = 4 * self.dim
        self.use_mlp = not no_mlp
        self.pos_every = pos_every
        self.no_pos = no_pos
        if self.use_mlp:
            self.linear_encoding = nn.Dense(self.dim, self.dim)
            self.dropout_layer1 = dropout(dropout_rate)
            self.mlp_head = nn.SequentialCell([nn.Dense(self.dim, hidden), dropout(dropout_rate), nn.ReLU(),
                                               nn.Dense(hidden, self.dim), dropout(dropout_rate)])
            self.query_embed = Table(num_queries, self.num_tokens * self.dim)
            self.row_slice = ops.Slice()
        if share_layer_graph and dropout_rate:
            raise ValueError("share_layer_graph needs dropout_rate 0 (see layers_share_one_graph)")
        self.share_layer_graph = share_layer_graph
        enc_type, dec_type = ((_SharedGraphEncoderLayer, _SharedGraphDecoderLayer) if share_layer_graph
                              else (EncoderLayer, DecoderLayer))
        args = (self.dim, num_heads, hidden, dropout_rate, no_norm, out_proj_bias)
        enc = [enc_type(*args) for _ in range(num_layers)]
        dec = [dec_type(*args) for _ in range(num_layers)]
        _copy_layer_weights(enc)
        _copy_layer_weights(dec)
        self.encoder = _Stack(enc)
        self.decoder = _Stack(dec)
        if not no_pos:
            self.position_encoding = PositionEncoding(self.num_tokens, self.dim)
        if no_norm:  # the official init for the norm-free variant
            for _, cell in self.cells_and_names():
                if isinstance(cell, nn.Dense):
                    fan_in = cell.weight.shape[1]
                    cell.weight.set_data(initializer(Normal(1.0 / fan_in), cell.weight.shape))

    def to_tokens(self, x):
        """(B, C, H, W) -> (B, L, C*p*p): token 16*i+j is patch (i, j), elements channel-major."""
        b = x.shape[0]
        g, p, c = self.grid, self.patch_dim, self.channels
        x = x.reshape(b, c, g, p, g, p).transpose(0, 2, 4, 1, 3, 5)
        return x.reshape(b, g * g, c * p * p)

    def from_tokens(self, t):
        """The exact inverse of `to_tokens` (torch's fold with stride = kernel)."""
        b = t.shape[0]
        g, p, c = self.grid, self.patch_dim, self.channels
        t = t.reshape(b, g, g, c, p, p).transpose(0, 3, 1, 4, 2, 5)
        return t.reshape(b, c, g * p, g * p)

    def construct(self, x, query_idx: int):
        tokens = self.to_tokens(x)
        query = None
        if self.use_mlp:
            tokens = self.dropout_layer1(self.linear_encoding(tokens)) + tokens
            # Slice, not weight[query_idx]: the StridedSlice of a (queries, 147456) row took 4.5 ms
            # per IPT-base forward on CPU (Zen 4), and `[]` of a Parameter escapes the mixed-precision cast.
            row = self.row_slice(self.query_embed.weight, (query_idx, 0), (1, self.num_tokens * self.dim))
            query = expand_to(row.reshape(1, self.num_tokens, self.dim), tokens)
        pos = None
        if not self.no_pos:  # expanded to the batch once, not broadcast by every add (src/common.expand_to)
            pos = expand_to(self.position_encoding.pe.weight.reshape(1, self.num_tokens, self.dim), tokens)
        if self.pos_every:
            memory = self._encode(tokens, pos)
            out = self._decode(memory, pos, query)
        elif self.no_pos:
            memory = self._encode(tokens, None)
            out = self._decode(memory, None, query)
        else:
            memory = self._encode(tokens + pos, None)
            out = self._decode(memory, None, query)
        if self.use_mlp:
            out = self.mlp_head(out) + out
        return self.from_tokens(out), out

    def _encode(self, x, pos):
        for layer in self.encoder.layers:
            x = layer(x, pos)
        return x

    def _decode(self, memory, pos, query):
        x = memory
        for layer in self.decoder.layers:
            x = layer(x, memory, pos, query)
        return x


def count_parameters(cell: nn.Cell) -> int:
    """Every parameter, frozen ones included (the official count includes the mean-shift convs)."""
    return int(sum(np.prod(p.shape) for p in cell.get_parameters()))

