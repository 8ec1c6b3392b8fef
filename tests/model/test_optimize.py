"""The inference copy (BN folded, neck+FC merged, TorchScript-frozen) equals the eager model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from streamcover.model.config import EncoderConfig
from streamcover.model.net import CoverEncoder
from streamcover.model.optimize import fold_for_inference, script_for_inference

TINY = {"layers": (1, 2, 1, 1), "widths": (4, 8, 8, 16), "stem_channels": 8}


def _trained_looking(cfg: EncoderConfig, seed: int = 0) -> CoverEncoder:
    torch.manual_seed(seed)
    model = CoverEncoder(cfg)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.3, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
            if isinstance(m, torch.nn.InstanceNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


@pytest.mark.parametrize(
    ("frontend", "opts"),
    [
        ("hpcp", {}),
        ("cqt", {}),
        ("hpcp", {"ibn": False, "pooling": "avg", "bnneck": False, "fc_bias": True}),
        ("cqt", {"input_norm": "none", "stem_pool_stride": None}),
    ],
)
def test_folded_matches_eager(frontend: str, opts: dict[str, object]) -> None:
    cfg = EncoderConfig.compact(frontend, **{**TINY, **opts})  # type: ignore[arg-type]
    model = _trained_looking(cfg)
    folded = fold_for_inference(model)
    x = torch.rand(5, 1, cfg.in_bins, 27) * 3
    with torch.inference_mode():
        want = F.normalize(model(x).embedding, dim=1)
        got = folded(x)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    # The original model is untouched (still has its BatchNorms and requires grad).
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "neck.bias")


def test_frozen_script_is_shape_generic() -> None:
    cfg = EncoderConfig.compact("hpcp", **TINY)
    model = _trained_looking(cfg, seed=3)
    runner = script_for_inference(fold_for_inference(model), torch.rand(2, 1, 12, 43))
    assert isinstance(runner, torch.jit.ScriptModule)
    with torch.inference_mode():
        for n, t in [(1, 13), (3, 20)]:
            x = torch.rand(n, 1, 12, t)
            want = F.normalize(model(x).embedding, dim=1)
            torch.testing.assert_close(runner(x), want, atol=2e-5, rtol=1e-4)
