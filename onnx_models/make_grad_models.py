#!/usr/bin/env python3
"""Gradient reference models for georob's ONNX-graph differentiator (onnx_models/grad/).

Called by make_models.py (`python onnx_models/make_models.py grad`), or directly:
    python onnx_models/make_grad_models.py [name-substring ...]

For every model <name> in grad/:
  <name>.onnx          single float input `input` (N,C,H,W), dynamic batch, output `logits` (N,K)
  <name>.input.npy     (2,C,H,W) float32, seeded
  <name>.logits.npy    (2,K) float32, torch forward (onnxruntime agrees within 1e-4)
  <name>.cot1.npy      (2,1,K)  float32 ~ N(0,1)
  <name>.grad1.npy     (2,1,C,H,W): grad[n,m] = sum_k cot[n,m,k] d logits[n,k] / d input[n]
  <name>.cot10.npy     (2,10,K)
  <name>.grad10.npy    (2,10,C,H,W)
Gradients come from torch autograd in float64 (model and input cast to double), saved as float32.
Models that torch cannot export in the wanted form are built with onnx.helper; their reference is a
torch re-implementation (checked against onnxruntime like the others).
"""
from __future__ import annotations

import copy
import json
import math
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

# The BatchNorm calibration and last-layer rescaling of make_models.py's tiny models (this
# directory is on sys.path both when run directly and when make_models.py imports this file).
from make_models import calibrate_bn, reinit_last_layer

warnings.filterwarnings("ignore")
torch.set_num_threads(2)

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "grad"
N = 2

SPECS: list[dict] = []
SKIPPED: dict[str, str] = {}


def spec(name, *, opset=17, dist="normal", chw=(3, 8, 8), k=10, head=True, kind="torch", tol=1e-4,
         note="", min_pool_gap=0.0):
    def deco(factory):
        SPECS.append(dict(name=name, opset=opset, dist=dist, chw=chw, k=k, head=head, kind=kind,
                          factory=factory, tol=tol, note=note, min_pool_gap=min_pool_gap))
        return factory
    return deco


def seed_of(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def randn(g, *shape, std=1.0):
    return torch.randn(*shape, generator=g) * std


class Body(nn.Module):
    """A module whose forward is fn(self, x); keyword tensors become buffers, modules submodules."""

    def __init__(self, fn, **parts):
        super().__init__()
        self._fn = fn
        for k, v in parts.items():
            if isinstance(v, nn.Module):
                self.add_module(k, v)
            else:
                self.register_buffer(k, v)

    def forward(self, x):
        return self._fn(self, x)


class Head(nn.Module):
    def __init__(self, body, d, k, g):
        super().__init__()
        self.body = body
        self.fc = nn.Linear(d, k)
        with torch.no_grad():
            self.fc.weight.copy_(randn(g, k, d, std=1.0 / math.sqrt(d)))
            self.fc.bias.copy_(randn(g, k, std=0.1))

    def forward(self, x):
        return self.fc(torch.flatten(self.body(x), 1))


def randomize_bn(model: nn.Module, g) -> None:
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            with torch.no_grad():
                if m.running_mean is not None:
                    m.running_mean.copy_(randn(g, c, std=0.1))
                    m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                    m.bias.copy_(randn(g, c, std=0.1))


def flatcat(*ts):
    return torch.cat([t.flatten(1) for t in ts], 1)


# =========================================================================== (a) operator graphs
# ---- Conv
@spec("op_conv_pads_strides", note="Conv 3->6, k3, strides (2,1), pads (1,2)")
def _(g):
    return Body(lambda s, x: s.c(x), c=nn.Conv2d(3, 6, 3, stride=(2, 1), padding=(1, 2)))


@spec("op_conv_dilation", note="Conv 3->4, k3, pads 2, dilations (2,1), no bias")
def _(g):
    return Body(lambda s, x: s.c(x), c=nn.Conv2d(3, 4, 3, padding=2, dilation=(2, 1), bias=False))


@spec("op_conv_groups", note="1x1 Conv 3->4, then Conv 4->6 k3 groups=2")
def _(g):
    return Body(lambda s, x: s.c2(s.c1(x)), c1=nn.Conv2d(3, 4, 1), c2=nn.Conv2d(4, 6, 3, padding=1, groups=2))


@spec("op_conv_depthwise", note="depthwise Conv 3->3 groups=3, stride 2")
def _(g):
    return Body(lambda s, x: s.c(x), c=nn.Conv2d(3, 3, 3, stride=2, padding=1, groups=3))


@spec("op_conv_depthwise_multiplier", note="Conv 3->6 groups=3, kernel 3x5")
def _(g):
    return Body(lambda s, x: s.c(x), c=nn.Conv2d(3, 6, (3, 5), padding=(1, 2), groups=3))


def _same_pads(in_hw, k, s, d, upper):
    pads_b, pads_e = [], []
    for i in range(2):
        out = -(-in_hw[i] // s[i])
        total = max((out - 1) * s[i] + (k[i] - 1) * d[i] + 1 - in_hw[i], 0)
        small = total // 2
        b, e = (small, total - small) if upper else (total - small, small)
        pads_b.append(b)
        pads_e.append(e)
    return pads_b, pads_e


def _conv_helper(auto_pad, k, s, d, pads=None, cout=4):
    def factory(g):
        W = randn(g, cout, 3, *k, std=0.3)
        b = randn(g, cout, std=0.1)
        attrs = dict(kernel_shape=list(k), strides=list(s), dilations=list(d))
        if auto_pad:
            attrs["auto_pad"] = auto_pad
            pb, pe = _same_pads((8, 8), k, s, d, auto_pad == "SAME_UPPER")
        else:
            attrs["pads"] = pads
            pb, pe = pads[:2], pads[2:]
        nodes = [helper.make_node("Conv", ["input", "W", "b"], ["y"], **attrs)]

        def ref(m, x):
            xp = F.pad(x, (pb[1], pe[1], pb[0], pe[0]))
            return F.conv2d(xp, m.W, m.b, stride=tuple(s), dilation=tuple(d))
        return dict(nodes=nodes, inits=dict(W=W, b=b), out="y", ref=ref)
    return factory


spec("op_conv_same_upper", kind="helper", note="auto_pad=SAME_UPPER, kernel 4x3, strides 1x2")(
    _conv_helper("SAME_UPPER", (4, 3), (1, 2), (1, 1)))
spec("op_conv_same_lower", kind="helper", note="auto_pad=SAME_LOWER, kernel 3x4, strides 2x1 "
                                              "(onnxruntime rejects dilations with SAME_*)")(
    _conv_helper("SAME_LOWER", (3, 4), (2, 1), (1, 1)))
spec("op_conv_asym_pads", kind="helper", note="explicit asymmetric pads [0,1,2,0], strides 2x1")(
    _conv_helper(None, (3, 3), (2, 1), (1, 1), pads=[0, 1, 2, 0]))


# ---- Gemm
@spec("op_gemm_transA_alpha_beta", kind="helper", head=False,
      note="Flatten -> Transpose -> Gemm(transA=1, transB=1, alpha=0.5, beta=2.0, C (1,K))")
def _(g):
    B = randn(g, 10, 192, std=1 / math.sqrt(192))
    C = randn(g, 1, 10, std=0.1)
    nodes = [helper.make_node("Flatten", ["input"], ["f"], axis=1),
             helper.make_node("Transpose", ["f"], ["ft"], perm=[1, 0]),
             helper.make_node("Gemm", ["ft", "B", "C"], ["logits"], transA=1, transB=1, alpha=0.5, beta=2.0)]
    return dict(nodes=nodes, inits=dict(B=B, C=C), out="logits",
                ref=lambda m, x: 0.5 * x.flatten(1) @ m.B.T + 2.0 * m.C)


@spec("op_gemm_noC_alpha", kind="helper", head=False, k=12,
      note="Gemm(transB=0, alpha=1.5) without C")
def _(g):
    B = randn(g, 192, 12, std=1 / math.sqrt(192))
    nodes = [helper.make_node("Flatten", ["input"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "B"], ["logits"], alpha=1.5)]
    return dict(nodes=nodes, inits=dict(B=B), out="logits", ref=lambda m, x: 1.5 * x.flatten(1) @ m.B)


@spec("op_gemm_c_vector_beta", kind="helper", head=False,
      note="Gemm(transB=0, beta=0.3) with C of shape (K,)")
def _(g):
    B = randn(g, 192, 10, std=1 / math.sqrt(192))
    C = randn(g, 10)
    nodes = [helper.make_node("Flatten", ["input"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "B", "C"], ["logits"], beta=0.3)]
    return dict(nodes=nodes, inits=dict(B=B, C=C), out="logits", ref=lambda m, x: x.flatten(1) @ m.B + 0.3 * m.C)


# ---- MatMul
@spec("op_matmul_broadcast", note="(N,3,8,8) @ const (8,5)")
def _(g):
    return Body(lambda s, x: x @ s.w, w=randn(g, 8, 5, std=0.4))


@spec("op_matmul_batched", note="x @ x^T, both operands depend on the input")
def _(g):
    return Body(lambda s, x: x @ x.transpose(2, 3))


@spec("op_matmul_bcast_left", note="const (3,6,8) @ (N,3,8,8)")
def _(g):
    return Body(lambda s, x: s.w @ x, w=randn(g, 3, 6, 8, std=0.4))


@spec("op_matmul_vector", note="x @ v and u @ x with 1-D constants")
def _(g):
    return Body(lambda s, x: flatcat(x @ s.v, s.u @ x), v=randn(g, 8), u=randn(g, 8))


# ---- elementwise binary with broadcasting
@spec("op_add_broadcast", note="x + (3,1,1), (8,) + x, x + x[:, :, :1]")
def _(g):
    return Body(lambda s, x: flatcat(x + s.a, s.b + x, x + x[:, :, :1, :]), a=randn(g, 3, 1, 1), b=randn(g, 8))


@spec("op_sub_broadcast", note="x - (1,3,1,8), (8,1) - x, x - mean_c(x)")
def _(g):
    return Body(lambda s, x: flatcat(x - s.a, s.b - x, x - x.mean(1, keepdim=True)),
                a=randn(g, 1, 3, 1, 8), b=randn(g, 8, 1))


@spec("op_mul_broadcast", note="x * (3,1,8), x * x, x[:, :1] * x")
def _(g):
    return Body(lambda s, x: flatcat(x * s.a, x * x, x[:, :1] * x), a=randn(g, 3, 1, 8))


@spec("op_div_broadcast", note="x / (8,), c / (x*x+1), x / (x[..., :1]^2 + 0.5)")
def _(g):
    return Body(lambda s, x: flatcat(x / s.a, s.b / (x * x + 1.0), x / (x[:, :, :, :1] * x[:, :, :, :1] + 0.5)),
                a=torch.rand(8, generator=g) + 0.5, b=randn(g, 3, 1, 1))


@spec("op_pow", dist="positive", note="x^3, x^1.5, x^-0.5, x^2 (input in [0.5,1.5])")
def _(g):
    return Body(lambda s, x: flatcat(x.pow(3), x.pow(1.5), x.pow(-0.5), x.pow(2)))


# ---- unary
for _name, _fn, _dist in [
    ("op_neg", lambda s, x: -x, "normal"),
    ("op_sqrt", lambda s, x: torch.sqrt(x), "positive"),
    ("op_exp", lambda s, x: torch.exp(x), "normal"),
    ("op_log", lambda s, x: torch.log(x), "positive"),
    ("op_tanh", lambda s, x: torch.tanh(2 * x), "normal"),
    ("op_erf", lambda s, x: torch.erf(x), "normal"),
    ("op_relu", lambda s, x: torch.relu(x), "normal"),
    ("op_leakyrelu", lambda s, x: F.leaky_relu(x, 0.1), "normal"),
    ("op_sigmoid", lambda s, x: torch.sigmoid(2 * x), "normal"),
    ("op_hardsigmoid", lambda s, x: F.hardsigmoid(4 * x), "normal"),
    ("op_hardswish", lambda s, x: F.hardswish(4 * x), "normal"),
    ("op_clip_relu6", lambda s, x: F.relu6(4 * x), "normal"),
    ("op_clip_minmax", lambda s, x: flatcat(x.clamp(-0.5, 0.7), x.clamp(min=-0.2)), "normal"),
]:
    spec(_name, dist=_dist)(lambda g, _fn=_fn: Body(_fn))

spec("op_clip_opset11", opset=11, note="Clip min/max as inputs (opset 11)")(
    lambda g: Body(lambda s, x: flatcat(F.relu6(4 * x), x.clamp(-0.5, 0.7))))
spec("op_clip_opset9", opset=9, note="Clip min/max as attributes (opset < 11)")(
    lambda g: Body(lambda s, x: flatcat(F.relu6(4 * x), x.clamp(-0.5, 0.7))))


@spec("op_prelu", note="PRelu with one slope and with per-channel slopes (one negative)")
def _(g):
    p1, p3 = nn.PReLU(1), nn.PReLU(3)
    with torch.no_grad():
        p1.weight.fill_(0.2)
        p3.weight.copy_(torch.tensor([0.1, -0.3, 0.5]))
    return Body(lambda s, x: flatcat(s.p1(x), s.p3(x)), p1=p1, p3=p3)


# ---- softmax
spec("op_softmax_axis1")(lambda g: Body(lambda s, x: torch.softmax(2 * x, dim=1)))
spec("op_logsoftmax_axis2")(lambda g: Body(lambda s, x: torch.log_softmax(2 * x, dim=2)))
spec("op_softmax_axis1_opset11_torch", opset=11, note="torch lowers dim=1 to Transpose+Softmax(-1)+Transpose")(
    lambda g: Body(lambda s, x: torch.softmax(2 * x, dim=1)))


@spec("op_softmax_axis1_opset11", kind="helper", opset=11,
      note="Softmax(axis=1) with opset<13 semantics: softmax over the flattened C*H*W")
def _(g):
    nodes = [helper.make_node("Softmax", ["input"], ["y"], axis=1)]
    return dict(nodes=nodes, inits={}, out="y", ref=lambda m, x: torch.softmax(x.flatten(1), 1).reshape(x.shape))


@spec("op_logsoftmax_axis2_opset11", kind="helper", opset=11,
      note="LogSoftmax(axis=2) with opset<13 semantics: over the flattened H*W")
def _(g):
    nodes = [helper.make_node("LogSoftmax", ["input"], ["y"], axis=2)]
    return dict(nodes=nodes, inits={}, out="y",
                ref=lambda m, x: torch.log_softmax(x.flatten(2), 2).reshape(x.shape))


# ---- pooling
spec("op_maxpool_pads_ceil", note="k3, s2, pads 1, ceil_mode")(lambda g: Body(lambda s, x: F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)))
spec("op_maxpool_dilation", note="k2, s1, pads 1, dilations 2")(lambda g: Body(lambda s, x: F.max_pool2d(x, 2, stride=1, padding=1, dilation=2)))
spec("op_maxpool_rect", note="k (2,3), s (2,1), pads (0,1)")(lambda g: Body(lambda s, x: F.max_pool2d(x, (2, 3), stride=(2, 1), padding=(0, 1))))
spec("op_avgpool_include_pad", note="k3, s2, pads 1, count_include_pad=1")(
    lambda g: Body(lambda s, x: F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=True)))
spec("op_avgpool_exclude_pad", note="k3, s2, pads 1, count_include_pad=0")(
    lambda g: Body(lambda s, x: F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)))
spec("op_avgpool_ceil", note="k (3,2), s2, pads (1,0), ceil_mode, count_include_pad=0")(
    lambda g: Body(lambda s, x: F.avg_pool2d(x, (3, 2), stride=2, padding=(1, 0), ceil_mode=True,
                                             count_include_pad=False)))
spec("op_global_avgpool")(lambda g: Body(lambda s, x: flatcat(F.adaptive_avg_pool2d(x, 1), x[:, :, :2, :2])))


@spec("op_global_maxpool", kind="helper")
def _(g):
    nodes = [helper.make_node("GlobalMaxPool", ["input"], ["y"])]
    return dict(nodes=nodes, inits={}, out="y", ref=lambda m, x: x.amax(dim=(2, 3), keepdim=True))


# ---- reductions
spec("op_reduce_mean")(lambda g: Body(lambda s, x: flatcat(x.mean(dim=(2, 3)), x.mean(dim=1, keepdim=True))))
spec("op_reduce_mean_opset18", opset=18, note="ReduceMean axes as an input (opset 18)")(
    lambda g: Body(lambda s, x: flatcat(x.mean(dim=(2, 3)), x.mean(dim=1, keepdim=True))))
spec("op_reduce_sum")(lambda g: Body(lambda s, x: flatcat(x.sum(dim=(1, 3)), x.sum(dim=2, keepdim=True))))
spec("op_reduce_sum_opset11", opset=11, note="ReduceSum axes as an attribute (opset < 13)")(
    lambda g: Body(lambda s, x: flatcat(x.sum(dim=(1, 3)), x.sum(dim=2, keepdim=True))))
spec("op_reduce_max")(lambda g: Body(lambda s, x: flatcat(x.amax(dim=(2, 3)), x.amax(dim=1, keepdim=True))))
spec("op_reduce_max_opset18", opset=18)(
    lambda g: Body(lambda s, x: flatcat(x.amax(dim=(2, 3)), x.amax(dim=1, keepdim=True))))


# ---- normalisation
@spec("op_batchnorm", note="BatchNormalization (inference) on the input")
def _(g):
    bn = nn.BatchNorm2d(3)
    randomize_bn(bn, g)
    return Body(lambda s, x: s.bn(x), bn=bn)


@spec("op_layernorm_lastdim", note="LayerNormalization axis=-1")
def _(g):
    ln = nn.LayerNorm(8)
    with torch.no_grad():
        ln.weight.copy_(torch.rand(8, generator=g) + 0.5)
        ln.bias.copy_(randn(g, 8, std=0.1))
    return Body(lambda s, x: s.ln(x), ln=ln)


@spec("op_layernorm_chw", note="LayerNormalization axis=1 (over C,H,W)")
def _(g):
    ln = nn.LayerNorm([3, 8, 8])
    with torch.no_grad():
        ln.weight.copy_(torch.rand(3, 8, 8, generator=g) + 0.5)
        ln.bias.copy_(randn(g, 3, 8, 8, std=0.1))
    return Body(lambda s, x: s.ln(x), ln=ln)


@spec("op_instancenorm")
def _(g):
    inn = nn.InstanceNorm2d(3, affine=True)
    with torch.no_grad():
        inn.weight.copy_(torch.rand(3, generator=g) + 0.5)
        inn.bias.copy_(randn(g, 3, std=0.1))
    return Body(lambda s, x: s.inn(x), inn=inn)


# ---- shape / data movement
spec("op_concat", note="Concat on axes 1, 3 and 2")(lambda g: Body(lambda s, x: flatcat(torch.cat([x, 2 * x[:, :1]], 1),
                                                     torch.cat([x[:, :, :, 3:], x * x], 3),
                                                     torch.cat([x[:, :, :2], x], 2))))
_split = lambda s, x: flatcat(*[t * (i + 1) for i, t in enumerate(torch.split(x, [1, 2], 1))],
                              *[t * (i + 1) for i, t in enumerate(torch.split(x, [3, 5], 2))])
spec("op_split", note="Split sizes as an input: [1,2] on axis 1, [3,5] on axis 2")(lambda g: Body(_split))
spec("op_split_opset11", opset=11, note="Split sizes as an attribute (opset < 13)")(lambda g: Body(_split))
spec("op_split_equal_opset18", opset=18, note="equal split (num_outputs form where the exporter uses it)")(
    lambda g: Body(lambda s, x: flatcat(*[t * (i + 1) for i, t in enumerate(torch.split(x, 4, 2))])))
_slice = lambda s, x: flatcat(x[:, 1:, 2:7:2, :-1], x[:, :, -3:, 1:5])
spec("op_slice", note="x[:, 1:, 2:7:2, :-1], x[:, :, -3:, 1:5]")(lambda g: Body(_slice))
spec("op_slice_opset11", opset=11)(lambda g: Body(_slice))
spec("op_slice_opset9", opset=9, note="Slice starts/ends/axes as attributes (opset < 10), unit steps")(
    lambda g: Body(lambda s, x: flatcat(x[:, 1:, 2:7, :-1], x[:, :, -3:, 1:5])))
spec("op_flip", note="torch.flip -> Slice with steps -1")(
    lambda g: Body(lambda s, x: flatcat(torch.flip(x, [2, 3]) * s.w, torch.flip(x, [1])), w=randn(g, 3, 8, 8)))


@spec("op_slice_negstep", kind="helper", note="Slice with steps [-2,-3], negative starts, INT_MIN ends")
def _(g):
    starts = np.array([6, -1], np.int64)
    ends = np.array([0, np.iinfo(np.int64).min], np.int64)
    axes = np.array([2, 3], np.int64)
    steps = np.array([-2, -3], np.int64)
    nodes = [helper.make_node("Slice", ["input", "starts", "ends", "axes", "steps"], ["y"])]
    i2, i3 = torch.tensor([6, 4, 2]), torch.tensor([7, 4, 1])
    return dict(nodes=nodes, inits=dict(starts=starts, ends=ends, axes=axes, steps=steps), out="y",
                ref=lambda m, x: x.index_select(2, i2).index_select(3, i3))


spec("op_gather", note="constant indices incl. duplicates and a scalar index")(
    lambda g: Body(lambda s, x: flatcat(x[:, [2, 0, 1]], x[:, :, 3], x[:, :, :, [1, 1, 5]],
                                        x.index_select(2, torch.tensor([7, 0, 7, 3])))))
spec("op_reshape", note="Reshape to a shape computed from Shape (dynamic batch) and to a constant with -1")(lambda g: Body(lambda s, x: flatcat(x.reshape(x.shape[0], 6, 32) * s.w,
                                                       x.reshape(-1, 3, 4, 16).sum(2)), w=randn(g, 6, 32)))
spec("op_flatten")(lambda g: Body(lambda s, x: torch.flatten(x, 1) * s.w, w=randn(g, 192)))
spec("op_transpose", note="perm (0,2,3,1) and (0,1,3,2)")(lambda g: Body(lambda s, x: flatcat(x.permute(0, 2, 3, 1) * s.w, x.transpose(2, 3)),
                                    w=randn(g, 8, 8, 3)))
_sq = lambda s, x: flatcat((x.unsqueeze(2) * s.w).sum(1), x[:, :1].squeeze(1), x[:, :, 2:3, :].squeeze(2),
                           x.unsqueeze(-1).squeeze(-1))
spec("op_squeeze_unsqueeze", note="Squeeze/Unsqueeze axes as inputs (opset 13+)")(lambda g: Body(_sq, w=randn(g, 3, 2, 1, 1)))
spec("op_squeeze_unsqueeze_opset11", opset=11, note="Squeeze/Unsqueeze axes as attributes (opset < 13)")(
    lambda g: Body(_sq, w=randn(g, 3, 2, 1, 1)))
spec("op_pad_constant", note="constant 0.5, pads computed by a shape subgraph")(lambda g: Body(lambda s, x: F.pad(x, (1, 2, 0, 3), value=0.5)))
spec("op_pad_reflect", note="reflect")(lambda g: Body(lambda s, x: F.pad(x, (2, 1, 3, 0), mode="reflect")))
spec("op_pad_edge", note="edge (torch replicate)")(lambda g: Body(lambda s, x: F.pad(x, (2, 1, 3, 0), mode="replicate")))
spec("op_pad_reflect_opset11", opset=11)(lambda g: Body(lambda s, x: F.pad(x, (2, 1, 3, 0), mode="reflect")))
spec("op_pad_constant_opset10", opset=10, note="Pad pads/value as attributes (opset < 11)")(
    lambda g: Body(lambda s, x: F.pad(x, (1, 2, 0, 3), value=0.5)))
@spec("op_pad_negative", kind="helper", note="Pad with pads/constant_value inputs, negative pads crop")
def _(g):
    pads = np.array([0, 0, 1, -1, 0, 0, -2, 2], np.int64)
    nodes = [helper.make_node("Pad", ["input", "pads", "value"], ["y"], mode="constant")]
    return dict(nodes=nodes, inits=dict(pads=pads, value=np.array(0.25, np.float32)), out="y",
                ref=lambda m, x: F.pad(x, (-1, 2, 1, -2), value=0.25))


spec("op_expand", note="Expand of a channel slice and of a pooled map")(lambda g: Body(lambda s, x: flatcat(x[:, :1].expand(-1, 3, -1, -1) * x,
                                                      x.mean(dim=(2, 3), keepdim=True).expand(-1, -1, 8, 8) * s.w),
                                 w=randn(g, 3, 8, 8)))
spec("op_where", note="Where(x>0, x, 0.3x) and Where(const mask, x, x*x)")(lambda g: Body(lambda s, x: flatcat(torch.where(x > 0, x, 0.3 * x), torch.where(s.mask, x, x * x)),
                                mask=torch.rand(3, 8, 8, generator=g) > 0.5))


@spec("op_identity", kind="helper")
def _(g):
    nodes = [helper.make_node("Identity", ["input"], ["y"])]
    return dict(nodes=nodes, inits={}, out="y", ref=lambda m, x: x)


@spec("op_dropout", kind="helper", note="Dropout (inference, ratio input, unused mask output)")
def _(g):
    nodes = [helper.make_node("Dropout", ["input", "ratio"], ["y", "mask"])]
    return dict(nodes=nodes, inits=dict(ratio=np.array(0.3, np.float32)), out="y", ref=lambda m, x: x)


class CastBody(nn.Module):
    def forward(self, x):
        y = x.to(torch.float64) * 2.0 + 1.0
        return y.to(x.dtype)


spec("op_cast", note="float32 -> float64 -> float32")(lambda g: CastBody())

# ---- Resize
spec("op_resize_nearest", note="nearest, scales 2 (asymmetric, floor)")(lambda g: Body(lambda s, x: F.interpolate(x, scale_factor=2, mode="nearest")))
spec("op_resize_nearest_size", note="nearest, sizes (12,5)")(lambda g: Body(lambda s, x: F.interpolate(x, size=(12, 5), mode="nearest")))
spec("op_resize_bilinear", note="linear, half_pixel, scales 2")(lambda g: Body(lambda s, x: F.interpolate(x, scale_factor=2, mode="bilinear",
                                                                     align_corners=False)))
spec("op_resize_bilinear_align", note="linear, align_corners, sizes (11,6)")(lambda g: Body(lambda s, x: F.interpolate(x, size=(11, 6), mode="bilinear",
                                                                           align_corners=True)))
spec("op_resize_bilinear_down", note="linear, half_pixel, downsample to (5,3)")(lambda g: Body(lambda s, x: F.interpolate(x, size=(5, 3), mode="bilinear",
                                                                          align_corners=False)))
spec("op_resize_nearest_opset11", opset=11)(
    lambda g: Body(lambda s, x: F.interpolate(x, scale_factor=2, mode="nearest")))
spec("op_resize_bilinear_opset11", opset=11)(
    lambda g: Body(lambda s, x: F.interpolate(x, size=(11, 6), mode="bilinear", align_corners=False)))
spec("op_resize_bilinear_opset13", opset=13)(
    lambda g: Body(lambda s, x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)))


# =========================================================================== (b) architectures
ARCH = dict(dist="uniform", chw=(3, 32, 32), head=False)


@spec("arch_resnet", **ARCH, note="ResNet of torchvision BasicBlocks, widths 8/16/32, one block per stage")
def _(g):
    from torchvision.models.resnet import BasicBlock

    def down(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout))

    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
        BasicBlock(8, 8), BasicBlock(8, 16, stride=2, downsample=down(8, 16)),
        BasicBlock(16, 32, stride=2, downsample=down(16, 32)),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


@spec("arch_mobilenet_v2", **ARCH, note="torchvision mobilenet_v2(width_mult=0.25)")
def _(g):
    import torchvision
    return torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25)


@spec("arch_mobilenet_v3_small", **ARCH, note="torchvision mobilenet_v3_small(width_mult=0.25)")
def _(g):
    import torchvision
    return torchvision.models.mobilenet_v3_small(num_classes=10, width_mult=0.25)


@spec("arch_efficientnet_b0", **ARCH, note="torchvision EfficientNet with a 3-stage MBConv setting")
def _(g):
    from torchvision.models.efficientnet import EfficientNet, MBConvConfig
    setting = [MBConvConfig(1, 3, 1, 16, 8, 1), MBConvConfig(6, 3, 2, 8, 16, 2), MBConvConfig(6, 5, 2, 16, 24, 1)]
    return EfficientNet(setting, dropout=0.2, num_classes=10, last_channel=64)


@spec("arch_densenet", **ARCH, note="torchvision DenseNet(growth 8, blocks (2,2), 16 init features)")
def _(g):
    from torchvision.models import DenseNet
    return DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, bn_size=2, num_classes=10)


@spec("arch_squeezenet1_1", **ARCH, note="torchvision squeezenet1_1 with its Fire stack cut to 1/4 width")
def _(g):
    import torchvision
    from torchvision.models.squeezenet import Fire
    m = torchvision.models.squeezenet1_1(num_classes=10)
    m.features = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(16, 4, 16, 16), Fire(32, 4, 16, 16), nn.MaxPool2d(3, 2, ceil_mode=True), Fire(32, 8, 32, 32))
    m.classifier[1] = nn.Conv2d(64, 10, 1)
    return m


@spec("arch_shufflenet_v2", **ARCH, note="torchvision ShuffleNetV2(stages [1,1,1], channels [8,16,32,64,128])")
def _(g):
    from torchvision.models import ShuffleNetV2
    return ShuffleNetV2([1, 1, 1], [8, 16, 32, 64, 128], num_classes=10)


@spec("arch_regnet", **ARCH, note="torchvision RegNet (Y-style, SE 0.25), depth 3, w0 8, group width 8")
def _(g):
    from torchvision.models.regnet import BlockParams, RegNet
    bp = BlockParams.from_init_params(depth=3, w_0=8, w_a=8.0, w_m=2.0, group_width=8, se_ratio=0.25)
    return RegNet(bp, num_classes=10, stem_width=8)


@spec("arch_convnext", **ARCH, note="torchvision ConvNeXt, block setting [(8,16,1),(16,None,1)]")
def _(g):
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt
    m = ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)], num_classes=10, layer_scale=0.5)
    return m


@spec("arch_vit", **ARCH, note="torchvision VisionTransformer(image 32, patch 8, 2 layers, 2 heads, hidden 32)")
def _(g):
    from torchvision.models import VisionTransformer
    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                             num_classes=10)


@spec("arch_swin", **ARCH, note="torchvision SwinTransformer(patch 4, embed 16, depths [2,2], heads [1,2], window 4)")
def _(g):
    from torchvision.models import SwinTransformer
    return SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[1, 2], window_size=[4, 4],
                           num_classes=10, stochastic_depth_prob=0.0)


@spec("arch_googlenet", dist="uniform", chw=(3, 64, 64), head=False, min_pool_gap=1e-5,
      note="Inception-v1 (GoogLeNet) from torchvision's BasicConv2d/Inception blocks at 1/4 width, 64x64; "
           "input drawn so that no MaxPool window holds two distinct values within 1e-5 (relative, 10x the float32 forward error) of each other")
def _(g):
    from torchvision.models.googlenet import BasicConv2d, Inception

    return nn.Sequential(
        BasicConv2d(3, 16, kernel_size=7, stride=2, padding=3), nn.MaxPool2d(3, stride=2, ceil_mode=True),
        BasicConv2d(16, 16, kernel_size=1), BasicConv2d(16, 48, kernel_size=3, padding=1),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),
        Inception(48, 16, 24, 32, 4, 8, 8), Inception(64, 32, 32, 48, 8, 24, 16),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),
        Inception(120, 48, 24, 52, 4, 12, 16), nn.MaxPool2d(2, stride=2, ceil_mode=True),
        Inception(128, 64, 40, 80, 8, 32, 32),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(208, 10))


def max_pool_gap(model: nn.Module, x: torch.Tensor) -> float:
    """Smallest relative gap, over every MaxPool2d window of `model` on `x` (float64), between the
    window's largest value and its largest value below that (exact ties are ignored: ReLU zeros,
    or one element seen by overlapping windows). A smaller gap than the float32 forward's error
    (about 1e-6) lets a float32 backend route that window's gradient to the other element."""
    gaps = []

    def hook(mod, inp, _out):
        t = inp[0]
        k, s, p = (mod.kernel_size, mod.stride, mod.padding)
        h, w = t.shape[2:]
        rnd = math.ceil if mod.ceil_mode else math.floor
        oh, ow = (rnd((n + 2 * p - k) / s) + 1 for n in (h, w))
        t = F.pad(t, (p, (ow - 1) * s + k - w - p, p, (oh - 1) * s + k - h - p), value=-math.inf)
        u = t.unfold(2, k, s).unfold(3, k, s)[:, :, :oh, :ow].flatten(-2)
        top = u.max(-1, keepdim=True).values
        below = torch.where(u < top, u, torch.full_like(u, -math.inf)).max(-1, keepdim=True).values
        rel = (top - below) / top.abs().clamp_min(1e-30)
        gaps.append(float(rel[torch.isfinite(rel) & (rel > 0)].min()) if (rel > 0).any() else math.inf)

    m64 = copy.deepcopy(model).double().eval()
    handles = [mod.register_forward_hook(hook) for mod in m64.modules() if isinstance(mod, nn.MaxPool2d)]
    with torch.no_grad():
        m64(x.double())
    for h in handles:
        h.remove()
    return min(gaps, default=math.inf)


# =========================================================================== machinery

def sample_input(dist, chw, g, n=N):
    if dist == "normal":
        return torch.randn(n, *chw, generator=g)
    if dist == "positive":
        return torch.rand(n, *chw, generator=g) + 0.5
    if dist == "uniform":
        return torch.rand(n, *chw, generator=g)
    raise ValueError(dist)


class HelperBody(nn.Module):
    def __init__(self, ref, inits):
        super().__init__()
        self._ref = ref
        for k, v in inits.items():
            t = torch.as_tensor(np.asarray(v)) if not torch.is_tensor(v) else v
            self.register_buffer(k, t.clone())

    def forward(self, x):
        return self._ref(self, x)


def build_helper_onnx(path, s, d, nodes, inits, out, head: Head | None):
    c, h, w = s["chw"]
    inits = {k: (v.numpy() if torch.is_tensor(v) else np.asarray(v)) for k, v in inits.items()}
    nodes = list(nodes)
    if head is not None:
        nodes += [helper.make_node("Flatten", [out], ["head_flat"], axis=1),
                  helper.make_node("Gemm", ["head_flat", "head_W", "head_b"], ["logits"], transB=1)]
        inits["head_W"] = head.fc.weight.detach().numpy()
        inits["head_b"] = head.fc.bias.detach().numpy()
    graph = helper.make_graph(
        nodes, s["name"],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", c, h, w])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", s["k"]])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", s["opset"])],
                              producer_name="georob make_grad_models.py")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def export_torch(model, x1, path, opset):
    torch.onnx.export(model, (x1,), str(path), dynamo=False, opset_version=opset, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                      do_constant_folding=True)
    m = onnx.load(str(path))
    for n in m.graph.node:
        n.doc_string = ""
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def ort_logits(path, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input": x})[0]


def make_one(s) -> dict:
    name = s["name"]
    seed = seed_of(name)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x = sample_input(s["dist"], s["chw"], g)
    path = OUT / f"{name}.onnx"

    helper_parts = None
    if s["kind"] == "helper":
        helper_parts = s["factory"](g)
        body = HelperBody(helper_parts["ref"], helper_parts["inits"])
    else:
        body = s["factory"](g)
        randomize_bn(body, g)
    body.eval()
    if s["head"]:
        with torch.no_grad():
            d = body(x).flatten(1).shape[1]
        model = Head(body, d, s["k"], g).eval()
    else:
        model = body
        if s["kind"] == "torch":  # architectures: BN stats from data, then a fresh scaled classifier
            calibrate_bn(model, [sample_input(s["dist"], s["chw"], g, n=32) for _ in range(2)])
            reinit_last_layer(model, x, g)
    for _ in range(50):  # redraw the input until no MaxPool window is a near tie (see max_pool_gap)
        if max_pool_gap(model, x) >= s["min_pool_gap"]:
            break
        x = sample_input(s["dist"], s["chw"], g)
    else:
        raise RuntimeError(f"no input without MaxPool near ties (< {s['min_pool_gap']}) in 50 draws")
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (N, s["k"]), (name, logits.shape)

    if helper_parts is not None:
        build_helper_onnx(path, s, None, helper_parts["nodes"], helper_parts["inits"], helper_parts["out"],
                          model if s["head"] else None)
    else:
        export_torch(model, x[:1], path, s["opset"])  # traced at batch 1, checked at batch 2

    got = ort_logits(path, x.numpy())
    err = float(np.abs(got.astype(np.float64) - logits.numpy()).max())
    if err > s["tol"]:
        raise RuntimeError(f"onnxruntime differs from torch by {err:.3g}")

    # float64 reference gradients
    m64 = copy.deepcopy(model).double().eval()
    x64 = x.double().requires_grad_(True)
    out64 = m64(x64)
    gc = torch.Generator().manual_seed(seed + 1)
    res = {}
    for mcount in (1, 10):
        cot = torch.randn(N, mcount, s["k"], generator=gc)
        grads = []
        for j in range(mcount):
            (gj,) = torch.autograd.grad(out64, x64, grad_outputs=cot[:, j, :].double(), retain_graph=True)
            grads.append(gj)
        res[mcount] = (cot, torch.stack(grads, 1))

    # independent sanity check: central finite difference of onnxruntime along a random direction
    # (smallest error over 3 step sizes: piecewise-linear ops have kinks near some inputs)
    v = torch.randn(x.shape, generator=gc).numpy()
    cot1, g1 = res[1]
    an = (g1[:, 0].numpy() * v).reshape(N, -1).sum(1)
    fd_rel = float("inf")
    for rel_step in (1e-2, 1e-3, 1e-4):
        eps = rel_step * float(np.abs(x.numpy()).mean())
        fp = ort_logits(path, (x.numpy() + eps * v).astype(np.float32)).astype(np.float64)
        fm = ort_logits(path, (x.numpy() - eps * v).astype(np.float32)).astype(np.float64)
        fd = ((fp - fm) / (2 * eps) * cot1[:, 0].numpy()).sum(1)
        fd_rel = min(fd_rel, float(np.abs(fd - an).max() / (np.abs(an).max() + 1e-6)))
    # float64 central difference of the torch reference itself (checks the autograd reference)
    v64 = torch.from_numpy(v).double()
    with torch.no_grad():
        d64 = (m64(x.double() + 1e-7 * v64) - m64(x.double() - 1e-7 * v64)) / 2e-7
    fd64 = (d64 * cot1[:, 0].double()).sum(1)
    fd64_rel = float((fd64 - torch.from_numpy(an)).abs().max() / (np.abs(an).max() + 1e-12))
    # float32 autograd vs the float64 reference (flags inputs sitting next to a kink)
    x32 = x.clone().requires_grad_(True)
    (g32,) = torch.autograd.grad(model(x32), x32, grad_outputs=cot1[:, 0, :])
    f32_rel = float((g32.double() - g1[:, 0]).abs().max() / (g1[:, 0].abs().max() + 1e-12))

    np.save(OUT / f"{name}.input.npy", x.numpy().astype(np.float32))
    np.save(OUT / f"{name}.logits.npy", logits.numpy().astype(np.float32))
    for mcount in (1, 10):
        cot, gr = res[mcount]
        np.save(OUT / f"{name}.cot{mcount}.npy", cot.numpy().astype(np.float32))
        np.save(OUT / f"{name}.grad{mcount}.npy", gr.detach().numpy().astype(np.float32))

    om = onnx.load(str(path))
    ops = []
    for n in om.graph.node:
        if n.op_type not in ops:
            ops.append(n.op_type)
    opset = next(o.version for o in om.opset_import if o.domain in ("", "ai.onnx"))
    entry = dict(ops=ops, opset=opset, input_shape=list(x.shape), k=s["k"],
                 source="onnx.helper + torch re-implementation" if s["kind"] == "helper" else "torch.onnx.export",
                 ort_max_abs_diff=float(f"{err:.3g}"), fd_check_rel_err=float(f"{fd_rel:.3g}"),
                 fd64_check_rel_err=float(f"{fd64_rel:.3g}"),
                 grad_f32_vs_f64_rel=float(f"{f32_rel:.3g}"),
                 grad1_abs_mean=float(f"{float(g1.abs().mean()):.3g}"),
                 bytes=path.stat().st_size)
    if s["min_pool_gap"]:
        entry["max_pool_min_rel_gap"] = float(f"{max_pool_gap(model, x):.3g}")
    if s["note"]:
        entry["note"] = s["note"]
    return entry


def main(filters=()) -> None:
    OUT.mkdir(exist_ok=True)
    man_path = OUT / "manifest.json"
    manifest = json.loads(man_path.read_text()) if (filters and man_path.exists()) else {}
    skipped = manifest.pop("_skipped", {}) if filters else {}
    if not filters:
        for f in OUT.glob("*"):
            f.unlink()
    for s in SPECS:
        if filters and not any(f in s["name"] for f in filters):
            continue
        for f in OUT.glob(f"{s['name']}.*"):
            f.unlink()
        try:
            e = make_one(s)
        except Exception as ex:  # export / runtime limitation: record and skip
            msg = f"{type(ex).__name__}: {str(ex).splitlines()[0][:300] if str(ex) else ''}"
            print(f"SKIP {s['name']}: {msg}")
            for f in OUT.glob(f"{s['name']}.*"):
                f.unlink()
            manifest.pop(s["name"], None)
            skipped[s["name"]] = msg
            continue
        skipped.pop(s["name"], None)
        manifest[s["name"]] = e
        flag = "" if e["fd64_check_rel_err"] < 1e-5 else "   <-- float64 finite-difference check loose"
        print(f"{s['name']:34s} opset {e['opset']:2d} ort {e['ort_max_abs_diff']:.1e} fd {e['fd_check_rel_err']:.1e} fd64 {e['fd64_check_rel_err']:.0e} "
              f"f32 {e['grad_f32_vs_f64_rel']:.0e} |g| {e['grad1_abs_mean']:.0e} {e['bytes'] / 1e3:7.1f} kB  {' '.join(e['ops'])}{flag}")
    order = [s["name"] for s in SPECS]
    manifest = {k: manifest[k] for k in sorted(manifest, key=lambda k: order.index(k) if k in order else 1e9)}
    if skipped:
        manifest["_skipped"] = skipped
    man_path.write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(f.stat().st_size for f in OUT.glob("*"))
    print(f"grad/: {len([k for k in manifest if not k.startswith('_')])} models, {total / 1e6:.2f} MB; "
          f"skipped: {list(skipped)}")


if __name__ == "__main__":
    main(tuple(sys.argv[1:]))
