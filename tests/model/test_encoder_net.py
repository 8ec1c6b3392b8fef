"""CoverEncoder: shapes for both front-ends, variable T, options, pitch-shift behaviour."""

from __future__ import annotations

import pytest
import torch

from streamcover.model.config import EncoderConfig
from streamcover.model.net import CoverEncoder, count_parameters

TINY = {"layers": (1, 1, 1, 1), "widths": (4, 8, 8, 16), "stem_channels": 8}


@pytest.mark.parametrize("frontend", ["cqt", "hpcp"])
@pytest.mark.parametrize("frames", [13, 20, 43])
def test_output_shapes_for_both_frontends_and_variable_length(frontend: str, frames: int) -> None:
    cfg = EncoderConfig.compact(frontend, **TINY)  # type: ignore[arg-type]
    model = CoverEncoder(cfg).eval()
    with torch.inference_mode():
        out = model(torch.rand(3, 1, cfg.in_bins, frames))
    assert out.pooled.shape == (3, cfg.feat_dim) == out.neck.shape
    assert out.embedding.shape == (3, 512)
    assert torch.isfinite(out.embedding).all()


def test_paper_config_is_resnet50_ibn_a() -> None:
    cfg = EncoderConfig.paper("cqt")
    assert cfg.layers == (3, 4, 6, 3) and cfg.feat_dim == 2048
    model = CoverEncoder(cfg)
    n = count_parameters(model)
    assert 23_000_000 < n < 26_000_000  # ResNet50 trunk (23.5 M) + 2048x512 FC
    ibn_blocks = [name for name, m in model.named_modules() if type(m).__name__ == "IBN"]
    assert len(ibn_blocks) == 3 + 4 + 6  # stages 1-3 only
    assert all(not name.startswith("layers.3") for name in ibn_blocks)
    # Last stage keeps stride 1: feature map is 6 bins high for 84 CQT bins, as in the paper.
    with torch.inference_mode():
        fmap = model.eval().backbone(torch.rand(1, 1, 84, 43))
    assert fmap.shape[1:3] == (2048, 6)


def test_hpcp_keeps_pitch_resolution_and_is_shift_equivariant_at_the_stem() -> None:
    cfg = EncoderConfig.compact("hpcp", **TINY)
    assert cfg.pitch_padding == "circular" and cfg.out_pitch_bins() >= 3
    model = CoverEncoder(cfg).eval()
    x = torch.rand(2, 1, 12, 20)
    with torch.inference_mode():
        a = model.bn1(model.conv1(x))
        b = model.bn1(model.conv1(torch.roll(x, 5, dims=2)))
    # Circular padding and no pitch stride in the stem: a key change is an exact roll.
    torch.testing.assert_close(torch.roll(a, 5, dims=2), b, atol=1e-5, rtol=1e-5)


def test_options_change_the_head() -> None:
    plain = CoverEncoder(
        EncoderConfig.compact("hpcp", ibn=False, pooling="avg", bnneck=False, **TINY)
    )
    names = {n for n, _ in plain.named_parameters()}
    assert "pool.p" not in names and not any(n.startswith("neck.") for n in names)
    assert not any(".inorm." in n for n in names)
    full = CoverEncoder(EncoderConfig.compact("hpcp", **TINY))
    fnames = {n for n, _ in full.named_parameters()}
    assert "pool.p" in fnames and "neck.weight" in fnames
    assert full.pool.p.item() == pytest.approx(3.0)
    assert not full.neck.bias.requires_grad  # BNNeck: bias frozen


def test_training_backward_reaches_gem_p_and_the_stem() -> None:
    model = CoverEncoder(EncoderConfig.compact("hpcp", **TINY)).train()
    out = model(torch.rand(4, 1, 12, 16))
    (out.pooled.sum() + out.embedding.pow(2).sum()).backward()
    for name in ("pool.p", "conv1.weight", "layers.0.0.bn3.weight", "fc.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    assert model.neck.bias.grad is None  # frozen BNNeck bias


def test_input_scale_does_not_matter_with_max_norm() -> None:
    model = CoverEncoder(EncoderConfig.compact("cqt", **TINY)).eval()
    x = torch.rand(2, 1, 84, 20)
    with torch.inference_mode():
        torch.testing.assert_close(
            model(x).embedding, model(x * 37.0).embedding, atol=1e-5, rtol=1e-4
        )


def test_wrong_input_is_refused_by_name() -> None:
    model = CoverEncoder(EncoderConfig.compact("hpcp", **TINY))
    with pytest.raises(ValueError, match=r"expects \[N, 1, 12, T\] hpcp"):
        model(torch.rand(2, 1, 84, 20))


def test_config_validation_and_round_trip() -> None:
    cfg = EncoderConfig.compact("hpcp")
    assert EncoderConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="one entry per stage"):
        EncoderConfig.compact("hpcp", layers=(1, 1))
    with pytest.raises(ValueError, match="strides must be >= 1"):
        EncoderConfig.compact("hpcp", stem_stride=(0, 2))
    assert EncoderConfig.paper("cqt").out_pitch_bins() == 6
    assert EncoderConfig.paper("hpcp").out_pitch_bins() == 3
    assert EncoderConfig.paper("cqt").time_reduction() == 16


def test_a_deeper_encoder_warm_starts_as_the_same_function() -> None:
    """Blocks appended to stages start as identities: same embeddings, train and eval."""
    from streamcover.model.net import load_into_deeper

    cfg = EncoderConfig.compact("hpcp", layers=(1, 1, 1, 1), widths=(4, 8, 8, 16),
                                stem_channels=8, embed_dim=16)
    torch.manual_seed(0)
    shallow = CoverEncoder(cfg)
    # Make every BatchNorm non-trivial, as after training (a fresh one is the identity).
    for m in shallow.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.2, 0.2)
    deep = CoverEncoder(cfg.model_copy(update={"layers": (2, 1, 3, 2)}))
    new = load_into_deeper(deep, shallow.state_dict())
    assert new == ["layers.0.1", "layers.2.1", "layers.2.2", "layers.3.1"]
    x = torch.rand(6, 1, 12, 43)
    for mode in (True, False):
        shallow.train(mode)
        deep.train(mode)
        with torch.no_grad():
            assert torch.allclose(deep(x).embedding, shallow(x).embedding, atol=1e-6)
    # Gradients reach the new blocks, so they can learn.
    deep.train()
    deep(x).embedding.pow(2).sum().backward()
    assert deep.layers[2][2].bn3.weight.grad is not None
    assert deep.layers[2][2].bn3.weight.grad.abs().sum() > 0
    # Fewer blocks, or other widths, are refused by name.
    with pytest.raises(ValueError, match="lacks"):
        load_into_deeper(CoverEncoder(cfg), deep.state_dict())
    wide = CoverEncoder(cfg.model_copy(update={"widths": (4, 8, 8, 32)}))
    with pytest.raises(ValueError, match="size mismatch"):
        load_into_deeper(wide, shallow.state_dict())
