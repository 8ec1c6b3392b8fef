"""The training forward pass over a batch's chunk-length groups (one backbone pass each)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from streamcover.model.net import CoverEncoder


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm in train mode that normalises with batch statistics but leaves running ones."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in zip(bns, saved, strict=True):
            m.momentum = mom


def encode_groups(model: CoverEncoder, groups: list[np.ndarray], owners: list[np.ndarray],
                  device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Encode chunk-length groups and return (pooled, neck, embedding, owner) sorted by sample.

    The backbone runs one pass per length group. The first group (full windows, the
    bulk of the batch) updates BatchNorm running statistics; the small groups of short
    clips use their batch statistics without updating them, so tiny batches do not skew
    the statistics used at inference. BNNeck and the PCA-FC then run once over all
    pooled features, as ``CoverEncoder.forward`` does per pass.
    """
    pooled_parts = []
    for g, chunks in enumerate(groups):
        x = model.normalize_input(model.check_input(torch.from_numpy(chunks).unsqueeze(1).to(device)))
        x = x.contiguous(memory_format=torch.channels_last)
        ctx = frozen_bn_stats(model) if g > 0 else contextlib.nullcontext()
        with ctx:
            pooled_parts.append(model.pool(model.backbone(x)))
    owner = torch.from_numpy(np.concatenate(owners)).to(device)
    order = torch.argsort(owner, stable=True)
    pooled = torch.cat(pooled_parts)[order]
    neck = model.neck(pooled)
    emb = model.fc(neck.to(model.fc.weight.dtype))
    return pooled, neck, emb, owner[order]
