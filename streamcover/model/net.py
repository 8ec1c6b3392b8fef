"""The ByteCover3 chunk encoder: ResNet-IBN-a backbone, GeM, BNNeck, PCA-FC.

Input ``[N, 1, bins, T]`` (84 CQT bins or 12 HPCP pitch classes, any T the strides
leave >= 1 frame of), output :class:`EncoderOutput` with the three features the
losses and retrieval need. Parameter names are part of the checkpoint format: keep
them stable (speed work happens on a copy at load time, see ``optimize.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamcover.model.config import EncoderConfig


class EncoderOutput(NamedTuple):
    """pooled = f_t (GeM, for the triplet loss); neck = f_c (BNNeck); embedding = PCA-FC output."""

    pooled: Tensor
    neck: Tensor
    embedding: Tensor


class PitchCircularConv2d(nn.Conv2d):
    """Conv2d padded circularly along pitch (dim -2) and with zeros along time.

    Subclassing keeps the parameter names (``weight``/``bias``) those of a plain Conv2d,
    so a config switch between padding modes never changes the state-dict layout.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: tuple[int, int] = (1, 1),
        bias: bool = False,
    ) -> None:
        pad = kernel_size // 2
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=(0, pad), bias=bias
        )
        self.pitch_pad = pad

    def forward(self, x: Tensor) -> Tensor:
        if self.pitch_pad:
            x = F.pad(x, (0, 0, self.pitch_pad, self.pitch_pad), mode="circular")
        return self._conv_forward(x, self.weight, self.bias)


def _conv(
    cfg: EncoderConfig, cin: int, cout: int, k: int, stride: tuple[int, int] = (1, 1)
) -> nn.Conv2d:
    if k > 1 and cfg.pitch_padding == "circular":
        return PitchCircularConv2d(cin, cout, k, stride=stride)
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


class StemPool(nn.Module):
    """3x3 max-pool; circular along pitch when the config asks for it."""

    def __init__(self, stride: tuple[int, int], circular: bool) -> None:
        super().__init__()
        self.stride = stride
        self.circular = circular

    def forward(self, x: Tensor) -> Tensor:
        if self.circular:
            x = F.pad(x, (0, 0, 1, 1), mode="circular")
            return F.max_pool2d(x, 3, self.stride, padding=(0, 1))
        return F.max_pool2d(x, 3, self.stride, padding=1)


class IBN(nn.Module):
    """IBN-a norm: InstanceNorm (affine) on the first ``ratio`` of channels, BatchNorm on the rest."""

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__()
        self.n_in = int(channels * ratio)
        self.inorm = nn.InstanceNorm2d(self.n_in, affine=True)
        self.bnorm = nn.BatchNorm2d(channels - self.n_in)

    def forward(self, x: Tensor) -> Tensor:
        a, b = torch.split(x, [self.n_in, x.shape[1] - self.n_in], dim=1)
        return torch.cat([self.inorm(a.contiguous()), self.bnorm(b.contiguous())], dim=1)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3), optionally with IBN as the first norm."""

    def __init__(
        self,
        cfg: EncoderConfig,
        cin: int,
        width: int,
        stride: tuple[int, int],
        ibn: bool,
    ) -> None:
        super().__init__()
        cout = width * cfg.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1: nn.Module = IBN(width, cfg.ibn_ratio) if ibn else nn.BatchNorm2d(width)
        self.conv2 = _conv(cfg, width, width, 3, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != (1, 1) or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class GeM(nn.Module):
    """Generalised-mean pooling over (pitch, time) with a trainable exponent p."""

    def __init__(self, p: float, eps: float) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.full((1,), float(p)))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # fp32 so x**p cannot overflow under fp16 autocast.
        p = self.p.float().clamp(min=1.0)
        x = x.float().clamp(min=self.eps).pow(p)
        return x.mean(dim=(-2, -1)).pow(1.0 / p)


class AvgPool(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.float().mean(dim=(-2, -1))


class CoverEncoder(nn.Module):
    """Chunk encoder ``[N, 1, bins, T] -> EncoderOutput``; the classifier lives in training code."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.feat_dim = cfg.feat_dim
        self.conv1 = _conv(cfg, 1, cfg.stem_channels, cfg.stem_kernel, cfg.stem_stride)
        self.bn1 = nn.BatchNorm2d(cfg.stem_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = (
            StemPool(cfg.stem_pool_stride, cfg.pitch_padding == "circular")
            if cfg.stem_pool_stride is not None
            else nn.Identity()
        )
        stages: list[nn.Module] = []
        cin = cfg.stem_channels
        last = len(cfg.layers) - 1
        for i, (blocks, width, stride) in enumerate(
            zip(cfg.layers, cfg.widths, cfg.stage_strides, strict=True)
        ):
            ibn = cfg.ibn and i < last
            stage = []
            for j in range(blocks):
                stage.append(Bottleneck(cfg, cin, width, stride if j == 0 else (1, 1), ibn))
                cin = width * cfg.expansion
            stages.append(nn.Sequential(*stage))
        self.layers = nn.ModuleList(stages)
        self.pool: nn.Module = GeM(cfg.gem_p, cfg.gem_eps) if cfg.pooling == "gem" else AvgPool()
        self.neck: nn.Module
        if cfg.bnneck:
            self.neck = nn.BatchNorm1d(self.feat_dim)
            self.neck.bias.requires_grad_(False)  # BNNeck: a scale-only neck
        else:
            self.neck = nn.Identity()
        self.fc = nn.Linear(self.feat_dim, cfg.embed_dim, bias=cfg.fc_bias)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif (
                isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d | nn.InstanceNorm2d)
                and m.weight is not None
            ):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)  # each block starts as identity
        nn.init.normal_(self.fc.weight, std=self.feat_dim**-0.5)
        if self.fc.bias is not None:
            nn.init.zeros_(self.fc.bias)

    def check_input(self, x: Tensor) -> Tensor:
        """Accept ``[N, bins, T]`` or ``[N, 1, bins, T]``; refuse anything else by name."""
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != self.cfg.in_bins:
            raise ValueError(
                f"CoverEncoder({self.cfg.name}) expects [N, 1, {self.cfg.in_bins}, T] "
                f"{self.cfg.frontend} features, got {list(x.shape)}"
            )
        if x.shape[0] == 0 or x.shape[3] == 0:
            raise ValueError(f"CoverEncoder({self.cfg.name}): empty input {list(x.shape)}")
        return x

    def normalize_input(self, x: Tensor) -> Tensor:
        if self.cfg.input_norm == "max":
            peak = x.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-8)
            x = x / peak
        return x

    def backbone(self, x: Tensor) -> Tensor:
        """Feature map ``[N, C, H, W]`` before pooling (for inspection and tests)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.layers:
            x = stage(x)
        return x

    def forward(self, x: Tensor) -> EncoderOutput:
        x = self.normalize_input(self.check_input(x))
        pooled = self.pool(self.backbone(x))
        neck = self.neck(pooled)
        emb = self.fc(neck.to(self.fc.weight.dtype))
        return EncoderOutput(pooled, neck, emb)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


_BLOCK_KEY = re.compile(r"^layers\.(\d+)\.(\d+)\.")


def load_into_deeper(model: CoverEncoder, state: Mapping[str, Tensor]) -> list[str]:
    """Load ``state`` from an encoder with the same widths and at most as many blocks per
    stage as ``model``; return the names of the blocks the source did not have.

    Those blocks become identities (their last BatchNorm's scale and shift are zeroed,
    and a block's input is already non-negative), so the deeper encoder starts out
    computing exactly what the source computed: a warm start that adds capacity
    (docs/training.md, eighth session). Raises ``ValueError`` when the state does not
    fit that way.
    """
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a weight of another shape
        raise ValueError(str(exc).splitlines()[-1].strip()) from exc
    if result.unexpected_keys:
        raise ValueError("the source has weights this encoder lacks: "
                         + ", ".join(sorted(result.unexpected_keys)[:4]))
    new_blocks: dict[int, set[int]] = {}
    for key in result.missing_keys:
        m = _BLOCK_KEY.match(key)
        if m is None:
            raise ValueError(f"the source lacks {key}, which is not part of a residual block")
        new_blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    names = []
    for stage, blocks in sorted(new_blocks.items()):
        stage_blocks = model.layers[stage]
        assert isinstance(stage_blocks, nn.Sequential)
        n = len(stage_blocks)
        if sorted(blocks) != list(range(min(blocks), n)) or min(blocks) == 0:
            raise ValueError(f"stage {stage}: the source's blocks are not a prefix of this "
                             f"encoder's (new blocks {sorted(blocks)} of {n})")
        for b in sorted(blocks):
            block = stage_blocks[b]
            assert isinstance(block, Bottleneck)
            if block.downsample is not None:
                raise ValueError(f"block layers.{stage}.{b} changes shape; cannot be an identity")
            with torch.no_grad():
                block.bn3.weight.zero_()
                block.bn3.bias.zero_()
            names.append(f"layers.{stage}.{b}")
    return names
