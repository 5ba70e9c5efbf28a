"""The official PyTorch IPT, rebuilt from ../shared/ipt_reference/ARCHITECTURE.md for side-by-side benches.

Same modules, names and call pattern as the official release (nn.MultiheadAttention, sequence-first,
need_weights left on, F.unfold/F.fold), so its state_dict loads the official weights and its speed
is the official code's speed. Checked against the official outputs (small_io_f64.npz) by
tests/test_bench_vs_torch.py. Needs the optional torch extra; nothing in src/ imports it.
"""
from __future__ import annotations

import copy
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

RGB_MEAN = (0.4488, 0.4371, 0.4040)


def conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=True)


class MeanShift(nn.Conv2d):
    """Frozen 1x1 conv adding or subtracting 255 * mean (std 1)."""

    def __init__(self, sign: int) -> None:
        super().__init__(3, 3, 1)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1)
        self.bias.data = sign * 255.0 * torch.tensor(RGB_MEAN)
        for p in self.parameters():
            p.requires_grad = False


class ResBlock(nn.Module):
    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv(n_feats, n_feats, 5), nn.ReLU(True), conv(n_feats, n_feats, 5))

    def forward(self, x):
        return self.body(x) + x


def upsampler(scale: int, n_feats: int) -> nn.Sequential:
    layers: List[nn.Module] = []
    if scale & (scale - 1) == 0:
        for _ in range(scale.bit_length() - 1):
            layers += [conv(n_feats, 4 * n_feats, 3), nn.PixelShuffle(2)]
    elif scale == 3:
        layers += [conv(n_feats, 9 * n_feats, 3), nn.PixelShuffle(3)]
    return nn.Sequential(*layers)


class EncoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=0.0, bias=False)
        self.linear1, self.linear2 = nn.Linear(d, hidden), nn.Linear(hidden, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, src):
        s = self.norm1(src)
        src = src + self.self_attn(s, s, s)[0]
        return src + self.linear2(F.relu(self.linear1(self.norm2(src))))


class DecoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=0.0, bias=False)
        self.multihead_attn = nn.MultiheadAttention(d, heads, dropout=0.0, bias=False)
        self.linear1, self.linear2 = nn.Linear(d, hidden), nn.Linear(hidden, d)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, tgt, memory, query):
        t = self.norm1(tgt)
        tgt = tgt + self.self_attn(t + query, t + query, t)[0]
        tgt = tgt + self.multihead_attn(self.norm2(tgt) + query, memory, memory)[0]
        return tgt + self.linear2(F.relu(self.linear1(self.norm3(tgt))))


class Stack(nn.Module):
    def __init__(self, layer: nn.Module, n: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(n)])


class PositionEncoding(nn.Module):
    def __init__(self, length: int, d: int) -> None:
        super().__init__()
        self.pe = nn.Embedding(length, d)
        self.register_buffer("position_ids", torch.arange(length).expand((1, -1)))

    def forward(self):
        return self.pe(self.position_ids).transpose(0, 1)  # (L, 1, E)


class Body(nn.Module):
    """The shared transformer on 3x3-patch tokens of a 48x48 feature map."""

    def __init__(self, n_feats: int, heads: int, layers: int, queries: int, patch: int = 48, pdim: int = 3):
        super().__init__()
        self.pdim, self.patch = pdim, patch
        self.d, self.length = n_feats * pdim * pdim, (patch // pdim) ** 2
        d, hidden = self.d, 4 * self.d
        self.linear_encoding = nn.Linear(d, d)
        self.mlp_head = nn.Sequential(nn.Linear(d, hidden), nn.Dropout(0.0), nn.ReLU(), nn.Linear(hidden, d),
                                      nn.Dropout(0.0))
        self.query_embed = nn.Embedding(queries, d * self.length)
        self.encoder = Stack(EncoderLayer(d, heads, hidden), layers)
        self.decoder = Stack(DecoderLayer(d, heads, hidden), layers)
        self.position_encoding = PositionEncoding(self.length, d)

    def forward(self, x, idx: int):
        b = x.shape[0]
        z = F.unfold(x, self.pdim, stride=self.pdim).permute(2, 0, 1).contiguous()  # (L, B, E)
        z = self.linear_encoding(z) + z
        query = self.query_embed.weight[idx].view(-1, 1, self.d).repeat(1, b, 1)
        z = z + self.position_encoding()
        for layer in self.encoder.layers:
            z = layer(z)
        u = z
        for layer in self.decoder.layers:
            u = layer(u, z, query)
        u = self.mlp_head(u) + u
        return F.fold(u.permute(1, 2, 0).contiguous(), self.patch, self.pdim, stride=self.pdim)


class TorchIPT(nn.Module):
    """IPT with one head/tail per scale in `scales` (official order) and one shared body."""

    def __init__(self, scales=(2,), n_feats: int = 64, heads: int = 12, layers: int = 12) -> None:
        super().__init__()
        self.sub_mean, self.add_mean = MeanShift(-1), MeanShift(1)
        self.head = nn.ModuleList([nn.Sequential(conv(3, n_feats, 3), ResBlock(n_feats), ResBlock(n_feats))
                                   for _ in scales])
        self.body = Body(n_feats, heads, layers, len(scales))
        self.tail = nn.ModuleList([nn.Sequential(upsampler(s, n_feats), conv(n_feats, 3, 3)) for s in scales])

    def forward(self, x, idx: int = 0):
        x = self.head[idx](self.sub_mean(x))
        return self.add_mean(self.tail[idx](self.body(x, idx) + x))
