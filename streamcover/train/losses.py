"""ByteCover multi-loss (global path) and ByteCover3 Local Alignment Loss (chunk path).

A training sample (a clip or a full track) is a set of 20 s chunks; the encoder runs
on every chunk. The global losses see either every chunk's own f_t/f_c with its work's
label (``global_level="chunk"``, the shipped config) or a sample's mean over its chunks
(``"sample"``). Chunk level trains each chunk to stand for its work, which is what
MaxMean retrieval needs (each query chunk must find a matching reference chunk) and
gives 4x more labelled examples per batch; the local losses below work on sets.

Global path (ByteCover): cross-entropy with label smoothing on f_c through a bias-free
linear classifier (or a CosFace cosine classifier, ``classifier="cosine"``), plus batch-hard triplet (margin 0.3, Euclidean) on f_t.
Local path (ByteCover3 LAL, on the L2-normalised chunk embeddings):
- L_lac: logits_k = exp(tau) * MaxMean(chunks, proxies_k), L proxies per class;
- L_lat: relu((1+m) * hardest_neg - hardest_pos) over MaxMean similarities between
  samples, plus a small pull of positive pairs toward similarity 1.
Optional: ASimT MAPLoss (smooth-AP) on the same MaxMean similarities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamcover.model.maxmean import maxmean_matrix


def segment_mean(x: Tensor, owner: Tensor, n: int) -> Tensor:
    """Mean of rows of ``x`` [N, ...] per owner id in 0..n-1 -> [n, ...]."""
    out = x.new_zeros((n, *x.shape[1:]))
    out.index_add_(0, owner, x)
    counts = torch.bincount(owner, minlength=n).clamp(min=1).to(x.dtype)
    return out / counts.view(-1, *([1] * (x.dim() - 1)))


def pad_sets(x: Tensor, owner: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Rows of ``x`` [N, D] grouped by owner into ``[n, L, D]`` plus a validity mask ``[n, L]``.

    Rows of one owner must be contiguous and in order (as a Batch builds them).
    """
    counts = torch.bincount(owner, minlength=n)
    length = int(counts.max().item()) if n else 0
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(len(owner), device=x.device) - starts[owner]
    padded = x.new_zeros((n, max(length, 1), x.shape[1]))
    padded[owner, pos] = x
    mask = torch.zeros((n, max(length, 1)), dtype=torch.bool, device=x.device)
    mask[owner, pos] = True
    return padded, mask


def _pair_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def _hardest(dist: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
    """Batch-hard mining on a distance-like matrix [B, B] (lower = closer): per anchor, the
    farthest positive and the nearest negative, and which anchors have both in the batch
    (None when none does)."""
    pos, neg = _pair_masks(labels)
    valid = pos.any(1) & neg.any(1)
    if not bool(valid.any()):
        return None
    hardest_pos = dist.masked_fill(~pos, float("-inf")).amax(1)
    hardest_neg = dist.masked_fill(~neg, float("inf")).amin(1)
    return hardest_pos, hardest_neg, valid


def batch_hard_triplet(features: Tensor, labels: Tensor, margin: float) -> Tensor:
    """Batch-hard triplet on Euclidean distances: relu(d(a, hardest p) - d(a, hardest n) + margin).

    Anchors without a positive or without a negative in the batch are skipped.
    """
    hardest = _hardest(torch.cdist(features.float(), features.float()), labels)
    if hardest is None:
        return features.sum() * 0.0
    hardest_pos, hardest_neg, valid = hardest
    return F.relu(hardest_pos - hardest_neg + margin)[valid].mean()


def maxmean_triplet(sim: Tensor, labels: Tensor, margin: float, pull_weight: float) -> Tensor:
    """ByteCover3 L_lat on a MaxMean similarity matrix [B, B] (higher = more similar).

    relu((1 + m) * hardest_negative_sim - hardest_positive_sim), plus ``pull_weight`` times
    the mean of (1 - sim) over positive pairs, which pulls versions toward each other.
    """
    hardest = _hardest(-sim, labels)  # mined on -sim: the hardest are the least / most similar
    if hardest is None:
        return sim.sum() * 0.0
    far_pos, near_neg, valid = hardest
    hardest_pos, hardest_neg = -far_pos, -near_neg
    trip = F.relu((1.0 + margin) * hardest_neg - hardest_pos)[valid].mean()
    pos, _ = _pair_masks(labels)
    pull = (1.0 - sim[pos]).mean()
    return trip + pull_weight * pull


def smooth_ap_loss(sim: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """ASimT MAPLoss: 1 - mean smooth-AP, ranks from sigmoids of similarity differences.

    For query q and positive i: rank_all(i) = 1 + sum_{j != q, i} sigma((s_qj - s_qi) / T),
    rank_pos(i) the same over positives only; AP_q = mean_i rank_pos(i) / rank_all(i).
    """
    n = len(labels)
    pos, _ = _pair_masks(labels)
    eye = torch.eye(n, dtype=torch.bool, device=sim.device)
    valid_q = pos.any(1)
    if not bool(valid_q.any()):
        return sim.sum() * 0.0
    # diff[q, i, j] = s_qj - s_qi
    diff = sim[:, None, :] - sim[:, :, None]
    sig = torch.sigmoid(diff / temperature)
    # Exclude j == q and j == i from the sums.
    exclude = eye[:, None, :] | eye[None, :, :]
    sig = sig.masked_fill(exclude, 0.0)
    rank_all = 1.0 + sig.sum(-1)
    rank_pos = 1.0 + (sig * pos[:, None, :]).sum(-1)
    ap_terms = (rank_pos / rank_all) * pos
    ap = ap_terms.sum(-1) / pos.sum(-1).clamp(min=1)
    return 1.0 - ap[valid_q].mean()


class ProxyClassifier(nn.Module):
    """L_lac: L learned proxy vectors per class, logits exp(tau) * MaxMean(chunks, proxies).

    The proxies are compared chunk-first (each chunk takes its best proxy, averaged over
    the sample's chunks), so a long sample is not asked to cover every proxy.
    """

    def __init__(self, n_classes: int, dim: int, n_proxies: int = 9) -> None:
        super().__init__()
        self.proxies = nn.Parameter(torch.randn(n_classes, n_proxies, dim) * dim**-0.5)
        self.tau = nn.Parameter(torch.zeros(()))

    def logits(self, emb: Tensor, owner: Tensor, n_samples: int) -> Tensor:
        k, n_prox, dim = self.proxies.shape
        w = F.normalize(self.proxies.float(), dim=-1).reshape(k * n_prox, dim)
        sims = F.normalize(emb.float(), dim=-1) @ w.t()  # [N, K*L]
        best = sims.view(-1, k, n_prox).amax(-1)  # [N, K]
        return self.tau.exp() * segment_mean(best, owner, n_samples)

    def forward(self, emb: Tensor, owner: Tensor, labels: Tensor,
                label_smoothing: float = 0.1) -> Tensor:
        return F.cross_entropy(self.logits(emb, owner, len(labels)), labels,
                               label_smoothing=label_smoothing)


class MultiLoss(nn.Module):
    """All training losses; holds the trainable heads (classifier, proxies)."""

    def __init__(self, n_classes: int, feat_dim: int, embed_dim: int, *, ce_weight: float = 1.0,
                 label_smoothing: float = 0.1, triplet_weight: float = 1.0,
                 triplet_margin: float = 0.3, lac_weight: float = 1.0, lac_proxies: int = 9,
                 lat_weight: float = 1.0, lat_margin: float = 0.1, lat_pull_weight: float = 0.1,
                 map_weight: float = 0.0, map_temperature: float = 0.01,
                 global_level: str = "chunk", classifier: str = "linear",
                 cosine_scale: float = 30.0, cosine_margin: float = 0.2) -> None:
        super().__init__()
        if classifier not in ("linear", "cosine"):
            raise ValueError(f"classifier must be 'linear' or 'cosine', got {classifier!r}")
        self.classifier = nn.Linear(feat_dim, n_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)
        self.classifier_kind = classifier
        self.cosine_scale = cosine_scale
        self.cosine_margin = cosine_margin
        self.proxy: ProxyClassifier | None = (
            ProxyClassifier(n_classes, embed_dim, lac_proxies) if lac_weight > 0 else None
        )
        self.ce_weight = ce_weight
        self.label_smoothing = label_smoothing
        self.triplet_weight = triplet_weight
        self.triplet_margin = triplet_margin
        self.lac_weight = lac_weight
        self.lat_weight = lat_weight
        self.lat_margin = lat_margin
        self.lat_pull_weight = lat_pull_weight
        self.map_weight = map_weight
        self.map_temperature = map_temperature
        if global_level not in ("chunk", "sample"):
            raise ValueError(f"global_level must be 'chunk' or 'sample', got {global_level!r}")
        self.global_level = global_level

    def class_logits(self, f_c: Tensor, labels: Tensor) -> Tensor:
        """CE logits: linear, or CosFace ``s * (cos - m * onehot)`` for the cosine classifier."""
        if self.classifier_kind == "linear":
            return self.classifier(f_c)
        cos = F.normalize(f_c, dim=-1) @ F.normalize(self.classifier.weight.float(), dim=-1).t()
        margin = F.one_hot(labels, cos.shape[1]).to(cos.dtype) * self.cosine_margin
        return self.cosine_scale * (cos - margin)

    def forward(self, pooled: Tensor, neck: Tensor, embedding: Tensor, owner: Tensor,
                labels: Tensor) -> dict[str, Tensor]:
        """Loss terms (weighted) and their sum under ``"total"``."""
        n = len(labels)
        terms: dict[str, Tensor] = {}
        if self.global_level == "chunk":
            f_c, f_t, glabels = neck.float(), pooled.float(), labels[owner]
        else:
            f_c = segment_mean(neck.float(), owner, n)
            f_t = segment_mean(pooled.float(), owner, n)
            glabels = labels
        if self.ce_weight > 0:
            terms["ce"] = self.ce_weight * F.cross_entropy(
                self.class_logits(f_c, glabels), glabels, label_smoothing=self.label_smoothing)
        if self.triplet_weight > 0:
            terms["triplet"] = self.triplet_weight * batch_hard_triplet(
                f_t, glabels, self.triplet_margin)
        if self.proxy is not None:
            terms["lac"] = self.lac_weight * self.proxy(
                embedding, owner, labels, self.label_smoothing)
        if self.lat_weight > 0 or self.map_weight > 0:
            emb = F.normalize(embedding.float(), dim=-1)
            sets, mask = pad_sets(emb, owner, n)
            sim = maxmean_matrix(sets, mask, sets, mask, normalized=True)
            if self.lat_weight > 0:
                terms["lat"] = self.lat_weight * maxmean_triplet(
                    sim, labels, self.lat_margin, self.lat_pull_weight)
            if self.map_weight > 0:
                terms["map"] = self.map_weight * smooth_ap_loss(
                    sim, labels, self.map_temperature)
        if not terms:
            raise ValueError("MultiLoss: every loss weight is 0")
        terms["total"] = torch.stack(list(terms.values())).sum()
        return terms
