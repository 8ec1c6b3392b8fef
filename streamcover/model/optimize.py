"""Inference-time speed-ups applied to a *copy* of a trained :class:`CoverEncoder`.

The checkpoint layout never changes for speed: instead, at load time,

- every BatchNorm is folded into the convolution before it (for IBN blocks, the BN half
  of the channels is folded into those output channels of ``conv1``; InstanceNorm stays,
  it depends on the input);
- BNNeck + PCA-FC collapse into one affine map;
- the result returns L2-normalised embeddings only, and can then be traced and frozen
  with TorchScript (:func:`script_for_inference`), which removes Python overhead per op.

:func:`fold_for_inference` output equals the eager model's normalised ``embedding`` up to
float rounding (tested).
"""

from __future__ import annotations

import copy
import logging
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamcover.model.net import IBN, AvgPool, Bottleneck, CoverEncoder, GeM

log = logging.getLogger(__name__)


def _fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, channels: slice | None = None) -> nn.Conv2d:
    """A copy of ``conv`` with ``bn`` (eval statistics) folded in, optionally only into
    output ``channels`` (the others keep scale 1 and zero bias)."""
    fused = copy.deepcopy(conv)
    w = conv.weight.detach().clone()
    b = (
        conv.bias.detach().clone()
        if conv.bias is not None
        else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    )
    assert bn.running_mean is not None and bn.running_var is not None
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() - bn.running_mean * scale
    sl = channels if channels is not None else slice(0, w.shape[0])
    w[sl] = w[sl] * scale[:, None, None, None]
    b[sl] = b[sl] * scale + shift
    fused.weight = nn.Parameter(w, requires_grad=False)
    fused.bias = nn.Parameter(b, requires_grad=False)
    return fused


class FoldedBottleneck(nn.Module):
    """A bottleneck with its BatchNorms folded away; InstanceNorm kept on the first n_in channels."""

    def __init__(self, block: Bottleneck) -> None:
        super().__init__()
        self.n_in = 0
        self.inorm: nn.Module = nn.Identity()
        if isinstance(block.bn1, IBN):
            n = block.bn1.n_in
            self.conv1 = _fold_conv_bn(block.conv1, block.bn1.bnorm, slice(n, None))
            self.n_in = n
            self.inorm = copy.deepcopy(block.bn1.inorm)
        else:
            assert isinstance(block.bn1, nn.BatchNorm2d)
            self.conv1 = _fold_conv_bn(block.conv1, block.bn1)
        self.conv2 = _fold_conv_bn(block.conv2, block.bn2)
        self.conv3 = _fold_conv_bn(block.conv3, block.bn3)
        self.downsample: nn.Module = nn.Identity()
        self.has_down = block.downsample is not None
        if block.downsample is not None:
            conv, bn = block.downsample[0], block.downsample[1]  # type: ignore[index]
            self.downsample = _fold_conv_bn(conv, bn)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        if self.n_in > 0:
            out = torch.cat([self.inorm(out[:, : self.n_in]), out[:, self.n_in :]], dim=1)
        out = F.relu(out)
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        return F.relu(out + self.downsample(x))


class FoldedEncoder(nn.Module):
    """Inference-only encoder: ``[N, 1, bins, T] -> [N, embed_dim]`` L2-normalised, fp32."""

    def __init__(self, model: CoverEncoder) -> None:
        super().__init__()
        model = model.eval()
        self.cfg = model.cfg
        self.input_max_norm = model.cfg.input_norm == "max"
        self.stem = _fold_conv_bn(model.conv1, model.bn1)
        self.maxpool = copy.deepcopy(model.maxpool)
        blocks = [m for m in model.layers.modules() if isinstance(m, Bottleneck)]
        self.blocks = nn.Sequential(*[FoldedBottleneck(b) for b in blocks])
        self.pool: nn.Module = copy.deepcopy(model.pool)
        assert isinstance(self.pool, GeM | AvgPool)
        # BNNeck (eval) then FC: W (s*x + t) + b = (W*s) x + (W t + b).
        w = model.fc.weight.detach().clone()
        b = (
            model.fc.bias.detach().clone()
            if model.fc.bias is not None
            else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
        )
        if isinstance(model.neck, nn.BatchNorm1d):
            bn = model.neck
            assert bn.running_mean is not None and bn.running_var is not None
            s = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
            t = bn.bias.detach() - bn.running_mean * s
            b = b + w @ t
            w = w * s[None, :]
        self.head = nn.Linear(w.shape[1], w.shape[0])
        self.head.weight = nn.Parameter(w, requires_grad=False)
        self.head.bias = nn.Parameter(b, requires_grad=False)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        if self.input_max_norm:
            x = x / x.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-8)
        x = self.maxpool(F.relu(self.stem(x)))
        x = self.blocks(x)
        emb = self.head(self.pool(x).to(self.head.weight.dtype))
        return F.normalize(emb, dim=1)


def fold_for_inference(model: CoverEncoder) -> FoldedEncoder:
    """BN-folded inference copy of ``model`` (the original is left untouched)."""
    return FoldedEncoder(model)


def script_for_inference(
    folded: FoldedEncoder, example: Tensor, mode: Literal["freeze", "none"] = "freeze"
) -> nn.Module:
    """Trace ``folded`` on ``example`` and freeze it (constant weights, fused ops).

    The traced graph is shape-generic in N and T (no shape-dependent Python branches in
    :class:`FoldedEncoder`), which the tests check. Falls back to the eager module if
    tracing fails, so a TorchScript problem costs speed, never availability.
    """
    if mode == "none":
        return folded
    try:
        with torch.no_grad():
            traced = torch.jit.trace(folded.eval(), example, check_trace=False)
            return torch.jit.freeze(traced.eval())
    except Exception as exc:  # pragma: no cover - depends on the torch build
        log.warning("TorchScript freeze failed (%s); using the eager folded model", exc)
        return folded
