"""Encoder architecture config: everything needed to rebuild the network from a checkpoint.

The config is a frozen pydantic model that round-trips through plain JSON, so a
checkpoint can store it as a dict and be loaded with ``torch.load(weights_only=True)``.
Two presets ship: :meth:`EncoderConfig.paper` (ByteCover's ResNet50-IBN-a) and
:meth:`EncoderConfig.compact` (a narrow, shallow variant for CPU monitoring).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FrontEndName = Literal["cqt", "hpcp"]

# Pitch bins each front-end produces (CQT: 7 octaves x 12; HPCP: 12 pitch classes).
FRONTEND_BINS: dict[str, int] = {"cqt": 84, "hpcp": 12}

Stride = tuple[int, int]  # (pitch, time)


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


class EncoderConfig(BaseModel):
    """Architecture of :class:`streamcover.model.net.CoverEncoder`.

    Strides are ``(pitch, time)`` pairs. Stage ``i`` has ``layers[i]`` bottleneck blocks of
    base width ``widths[i]`` and output width ``widths[i] * expansion``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field("encoder", min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    frontend: FrontEndName
    in_bins: int = Field(..., ge=1)
    layers: tuple[int, ...] = (3, 4, 6, 3)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    expansion: int = Field(4, ge=1)
    stem_channels: int = Field(64, ge=1)
    stem_kernel: int = Field(7, ge=1)
    stem_stride: Stride = (2, 2)
    # 3x3 max-pool after the stem conv (ResNet); None = no pool.
    stem_pool_stride: Stride | None = (2, 2)
    # Stride of the first block of each stage; the last stage keeps stride 1 (ByteCover).
    stage_strides: tuple[Stride, ...] = ((1, 1), (2, 2), (2, 2), (1, 1))
    # IBN-a: InstanceNorm on ibn_ratio of the channels of each block's first norm,
    # in every stage except the last.
    ibn: bool = True
    ibn_ratio: float = Field(0.5, gt=0, lt=1)
    # "circular" keeps a key change (a roll along the pitch axis) a circular shift of the maps.
    pitch_padding: Literal["zeros", "circular"] = "zeros"
    pooling: Literal["gem", "avg"] = "gem"
    gem_p: float = Field(3.0, ge=1.0)
    gem_eps: float = Field(1e-6, gt=0)
    bnneck: bool = True
    embed_dim: int = Field(512, ge=1)
    fc_bias: bool = False
    # Per-chunk input scaling inside the net so training and inference cannot disagree.
    input_norm: Literal["none", "max"] = "max"

    @model_validator(mode="after")
    def _consistent(self) -> EncoderConfig:
        n = len(self.layers)
        if n == 0:
            raise ValueError("encoder config: layers must name at least one stage")
        if len(self.widths) != n or len(self.stage_strides) != n:
            raise ValueError(
                f"encoder config: layers ({n}), widths ({len(self.widths)}) and "
                f"stage_strides ({len(self.stage_strides)}) must have one entry per stage"
            )
        if any(b < 1 for b in self.layers) or any(w < 1 for w in self.widths):
            raise ValueError("encoder config: every stage needs >= 1 block and width >= 1")
        strides = [self.stem_stride, *self.stage_strides]
        if self.stem_pool_stride is not None:
            strides.append(self.stem_pool_stride)
        if any(s < 1 for pair in strides for s in pair):
            raise ValueError("encoder config: strides must be >= 1")
        if self.ibn and any(int(w * self.ibn_ratio) < 1 for w in self.widths[:-1]):
            raise ValueError("encoder config: ibn_ratio leaves no InstanceNorm channels")
        if self.out_pitch_bins() < 1:
            raise ValueError(
                f"encoder config: {self.in_bins} input bins shrink to nothing; reduce pitch strides"
            )
        return self

    @property
    def feat_dim(self) -> int:
        """Channels C of the pooled feature (f_t) and the BNNeck output (f_c)."""
        return self.widths[-1] * self.expansion

    def out_pitch_bins(self) -> int:
        """Height of the last feature map, for validating the strides against in_bins."""
        h = _conv_out(self.in_bins, self.stem_kernel, self.stem_stride[0], self.stem_kernel // 2)
        if self.stem_pool_stride is not None:
            h = _conv_out(h, 3, self.stem_pool_stride[0], 1)
        for sp, _ in self.stage_strides:
            h = _conv_out(h, 3, sp, 1)
        return h

    def time_reduction(self) -> int:
        """Product of the time strides: output frames ~= ceil(T / this)."""
        r = self.stem_stride[1] * (self.stem_pool_stride[1] if self.stem_pool_stride else 1)
        for _, st in self.stage_strides:
            r *= st
        return r

    def changes_to(self, other: EncoderConfig) -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ, as ``{field: (self's, other's)}`` in JSON form."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (lists, not tuples) for checkpoints."""
        return json.loads(self.model_dump_json())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        return cls.model_validate(data)

    @classmethod
    def paper(cls, frontend: FrontEndName = "cqt", **overrides: Any) -> EncoderConfig:
        """ResNet50-IBN-a as in ByteCover: 3-4-6-3 bottlenecks, widths 64..512 (x4 = 2048).

        CQT (84 bins): the usual /4 stem, so the last map is 6 bins high as in the paper.
        HPCP (12 bins): no pitch stride in the stem, circular pitch padding, 12 -> 3 bins.
        """
        base: dict[str, Any] = {"name": f"bytecover3-{frontend}-paper", "frontend": frontend}
        base.update(_frontend_geometry(frontend))
        base.update(overrides)
        return cls(**base)

    @classmethod
    def compact(cls, frontend: FrontEndName = "hpcp", **overrides: Any) -> EncoderConfig:
        """A CPU-friendly IBN ResNet: base width 32, 2-2-2-2 blocks (C = 1024)."""
        base: dict[str, Any] = {
            "name": f"bytecover3-{frontend}-compact",
            "frontend": frontend,
            "layers": (2, 2, 2, 2),
            "widths": (32, 64, 128, 256),
            "stem_channels": 32,
        }
        base.update(_frontend_geometry(frontend))
        base.update(overrides)
        return cls(**base)


def _frontend_geometry(frontend: str) -> dict[str, Any]:
    if frontend == "cqt":
        return {
            "in_bins": FRONTEND_BINS["cqt"],
            "stem_stride": (2, 2),
            "stem_pool_stride": (2, 2),
            "stage_strides": ((1, 1), (2, 2), (2, 2), (1, 1)),
            "pitch_padding": "zeros",
        }
    if frontend == "hpcp":
        return {
            "in_bins": FRONTEND_BINS["hpcp"],
            "stem_stride": (1, 2),
            "stem_pool_stride": (1, 2),
            "stage_strides": ((1, 1), (2, 2), (2, 2), (1, 1)),
            "pitch_padding": "circular",
        }
    raise ValueError(f"unknown front-end {frontend!r}; expected 'cqt' or 'hpcp'")
