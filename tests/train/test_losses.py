from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from streamcover.train.losses import (
    MultiLoss,
    ProxyClassifier,
    batch_hard_triplet,
    maxmean_triplet,
    pad_sets,
    segment_mean,
    smooth_ap_loss,
)

LABELS = torch.tensor([0, 0, 1, 1, 2, 2])


def _clustered(spread: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 8, generator=g) * 3
    return centres[LABELS] + spread * torch.randn(6, 8, generator=g)


def test_batch_hard_triplet_lower_when_versions_cluster() -> None:
    tight = batch_hard_triplet(_clustered(0.05), LABELS, 0.3)
    loose = batch_hard_triplet(_clustered(5.0), LABELS, 0.3)
    assert tight.item() == 0.0  # every negative is farther than the margin
    assert loose.item() > 0.3


def test_batch_hard_triplet_uses_the_hardest_pair() -> None:
    x = torch.tensor([[0.0], [1.0], [1.5], [5.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # anchor 0: hardest pos d=1, hardest neg d=1.5 -> relu(1 - 1.5 + 2) = 1.5
    # anchor 1: pos 1, neg 0.5 -> 2.5; anchor 2: pos 3.5, neg 0.5 -> 5; anchor 3: pos 3.5, neg 4 -> 1.5
    loss = batch_hard_triplet(x, labels, margin=2.0)
    assert torch.isclose(loss, torch.tensor((1.5 + 2.5 + 5.0 + 1.5) / 4))


def test_maxmean_triplet_zero_only_when_positives_beat_negatives_by_margin() -> None:
    sim = torch.tensor([[1.0, 0.9, 0.2, 0.1], [0.9, 1.0, 0.1, 0.3],
                        [0.2, 0.1, 1.0, 0.8], [0.1, 0.3, 0.8, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    good = maxmean_triplet(sim, labels, margin=0.1, pull_weight=0.0)
    assert good.item() == 0.0
    swapped = maxmean_triplet(sim, torch.tensor([0, 1, 0, 1]), margin=0.1, pull_weight=0.0)
    assert swapped.item() > 0.5
    # the pull term: mean over positive pairs of 1 - sim = 1 - (0.9 + 0.8) / 2
    pull = maxmean_triplet(sim, labels, margin=0.1, pull_weight=1.0) - good
    assert torch.isclose(pull, torch.tensor(1 - 0.85))


def test_smooth_ap_near_zero_for_perfect_ranking_and_high_for_inverted() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    same = (labels[:, None] == labels[None, :]).float()
    perfect = 0.9 * same + 0.1 * (1 - same)
    inverted = 0.1 * same + 0.9 * (1 - same)
    lo = smooth_ap_loss(perfect, labels, temperature=0.01)
    hi = smooth_ap_loss(inverted, labels, temperature=0.01)
    assert lo.item() < 0.01
    assert hi.item() > 0.4
    sim = torch.rand(6, 6, requires_grad=True)
    smooth_ap_loss(sim, labels, 0.05).backward()
    assert sim.grad is not None and sim.grad.abs().sum() > 0


def test_segment_mean_and_pad_sets() -> None:
    x = torch.arange(10.0).view(5, 2)
    owner = torch.tensor([0, 0, 1, 2, 2])
    m = segment_mean(x, owner, 3)
    assert torch.allclose(m, torch.tensor([[1.0, 2.0], [4.0, 5.0], [7.0, 8.0]]))
    padded, mask = pad_sets(x, owner, 3)
    assert padded.shape == (3, 2, 2)
    assert mask.tolist() == [[True, True], [True, False], [True, True]]
    assert torch.equal(padded[1, 0], x[2]) and not padded[1, 1].any()


def test_proxy_classifier_prefers_the_class_whose_proxy_matches() -> None:
    torch.manual_seed(0)
    clf = ProxyClassifier(n_classes=3, dim=8, n_proxies=4)
    with torch.no_grad():
        clf.tau.fill_(3.0)
    # two chunks of one sample, each equal to a different proxy of class 2
    emb = torch.stack([clf.proxies[2, 0], clf.proxies[2, 3]]).detach()
    logits = clf.logits(emb, torch.tensor([0, 0]), 1)
    assert logits.argmax().item() == 2
    assert torch.isclose(logits[0, 2], torch.tensor(3.0).exp(), atol=1e-4)  # MaxMean = 1
    right = clf(emb, torch.tensor([0, 0]), torch.tensor([2]))
    wrong = clf(emb, torch.tensor([0, 0]), torch.tensor([0]))
    assert right < wrong


def test_multiloss_terms_finite_and_lower_for_aligned_versions() -> None:
    torch.manual_seed(0)
    loss = MultiLoss(n_classes=3, feat_dim=8, embed_dim=8, map_weight=1.0)
    owner = torch.arange(6).repeat_interleave(2)  # 6 samples of 2 chunks
    aligned = _clustered(0.05).repeat_interleave(2, 0)
    scattered = _clustered(5.0, seed=1).repeat_interleave(2, 0)
    a = loss(aligned.abs(), aligned, aligned, owner, LABELS)
    s = loss(scattered.abs(), scattered, scattered, owner, LABELS)
    assert set(a) == {"ce", "triplet", "lac", "lat", "map", "total"}
    assert all(torch.isfinite(v) for v in a.values())
    assert a["lat"] < s["lat"] and a["map"] < s["map"]
    emb = F.normalize(torch.randn(12, 8), dim=-1).requires_grad_(True)
    loss(emb.abs(), emb, emb, owner, LABELS)["total"].backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all()


def test_global_losses_per_chunk_use_each_chunks_work_label() -> None:
    torch.manual_seed(0)
    owner = torch.arange(6).repeat_interleave(2)
    feats = _clustered(0.05).repeat_interleave(2, 0)
    chunk = MultiLoss(3, 8, 8, lac_weight=0, lat_weight=0, global_level="chunk")
    sample = MultiLoss(3, 8, 8, lac_weight=0, lat_weight=0, global_level="sample")
    sample.load_state_dict(chunk.state_dict())
    # identical chunks within a sample: chunk-level and sample-level CE agree
    a = chunk(feats.abs(), feats, feats, owner, LABELS)
    b = sample(feats.abs(), feats, feats, owner, LABELS)
    assert torch.isclose(a["ce"], b["ce"], atol=1e-5)
    # a chunk that looks like another work raises the chunk-level triplet only
    odd = feats.clone()
    odd[1] = feats[4]
    assert chunk(odd.abs(), odd, odd, owner, LABELS)["triplet"] > a["triplet"]
    with pytest.raises(ValueError, match="global_level"):
        MultiLoss(3, 8, 8, global_level="track")


def test_cosine_classifier_is_scale_free_and_applies_its_margin() -> None:
    torch.manual_seed(0)
    feats = _clustered(0.05)
    owner = torch.arange(len(LABELS))
    cos = MultiLoss(3, 8, 8, lac_weight=0, lat_weight=0, triplet_weight=0, label_smoothing=0.0,
                    classifier="cosine", cosine_scale=10.0, cosine_margin=0.3)
    a = cos(feats, feats, feats, owner, LABELS)["ce"]
    # f_c enters only through its direction: scaling it changes nothing
    b = cos(feats * 7.0, feats * 7.0, feats, owner, LABELS)["ce"]
    assert torch.isclose(a, b, atol=1e-5)
    logits = cos.class_logits(feats, LABELS)
    plain = 10.0 * F.normalize(feats, dim=-1) @ F.normalize(cos.classifier.weight, dim=-1).t()
    target = F.one_hot(LABELS, 3).bool()
    assert torch.allclose(logits[target], plain[target] - 3.0, atol=1e-5)
    assert torch.allclose(logits[~target], plain[~target], atol=1e-5)
    with pytest.raises(ValueError, match="classifier"):
        MultiLoss(3, 8, 8, classifier="arcface")
