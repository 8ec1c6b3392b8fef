"""Checkpoints: round trip, refusal of mismatches, corruption, fp16 export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from streamcover.model.checkpoint import (
    CheckpointError,
    Provenance,
    load_checkpoint,
    save_checkpoint,
)
from streamcover.model.config import EncoderConfig
from streamcover.model.net import CoverEncoder

TINY = {"layers": (1, 1, 1, 1), "widths": (4, 8, 8, 16), "stem_channels": 8}


def _model(seed: int = 0, **kw: object) -> tuple[CoverEncoder, EncoderConfig]:
    torch.manual_seed(seed)
    cfg = EncoderConfig.compact("hpcp", **{**TINY, **kw})  # type: ignore[arg-type]
    model = CoverEncoder(cfg)
    with torch.no_grad():  # non-trivial BN statistics and p
        model.pool.p.fill_(3.7)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    return model.eval(), cfg


def test_round_trip_same_outputs_id_and_provenance(tmp_path: Path) -> None:
    model, cfg = _model()
    prov = Provenance(data="unit-test", steps=12, metrics={"map": 0.5}, git_commit="abc")
    mid = save_checkpoint(tmp_path / "m.pt", model, cfg, None, prov)
    assert mid.startswith(cfg.name + "-") and len(mid) == len(cfg.name) + 13
    loaded = load_checkpoint(tmp_path / "m.pt", expect=cfg)
    assert loaded.model_id == mid and loaded.cfg == cfg
    assert loaded.provenance.steps == 12 and loaded.provenance.metrics == {"map": 0.5}
    x = torch.rand(3, 1, 12, 30)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(x).embedding, model(x).embedding)
    # Same weights -> same id; different weights -> different id.
    assert save_checkpoint(tmp_path / "m2.pt", model, cfg) == mid
    other, _ = _model(seed=1)
    assert save_checkpoint(tmp_path / "m3.pt", other, cfg) != mid


def test_expected_config_mismatch_is_refused(tmp_path: Path) -> None:
    model, cfg = _model()
    save_checkpoint(tmp_path / "m.pt", model, cfg)
    with pytest.raises(CheckpointError, match=r"different model.*bnneck"):
        load_checkpoint(tmp_path / "m.pt", expect=cfg.model_copy(update={"bnneck": False}))


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path: Path) -> None:
    model, cfg = _model()
    wider = cfg.model_copy(update={"widths": (4, 8, 8, 32)})
    with pytest.raises(CheckpointError, match="differs from the model"):
        save_checkpoint(tmp_path / "m.pt", model, wider)
    with pytest.raises(CheckpointError, match="do not fit"):
        save_checkpoint(tmp_path / "m.pt", torch.nn.Linear(2, 2), wider)
    # A checkpoint whose stored config was edited after saving is caught on load.
    save_checkpoint(tmp_path / "m.pt", model, cfg)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["config"]["widths"] = [4, 8, 8, 32]
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(tmp_path / "edited.pt")


def test_truncated_and_foreign_files_give_clear_errors(tmp_path: Path) -> None:
    model, cfg = _model()
    save_checkpoint(tmp_path / "m.pt", model, cfg)
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt is corrupt"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"junk\.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a streamcover-encoder"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_tampered_weights_fail_the_hash(tmp_path: Path) -> None:
    model, cfg = _model()
    save_checkpoint(tmp_path / "m.pt", model, cfg)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["state_dict"]["fc.weight"][0, 0] += 1.0
    torch.save(payload, tmp_path / "t.pt")
    with pytest.raises(CheckpointError, match="hash"):
        load_checkpoint(tmp_path / "t.pt")


def test_fp16_export_is_smaller_and_close(tmp_path: Path) -> None:
    model, cfg = _model()
    mid32 = save_checkpoint(tmp_path / "f32.pt", model, cfg)
    mid16 = save_checkpoint(tmp_path / "f16.pt", model, cfg, half=True)
    assert mid16 != mid32
    assert (tmp_path / "f16.pt").stat().st_size < 0.7 * (tmp_path / "f32.pt").stat().st_size
    loaded = load_checkpoint(tmp_path / "f16.pt")
    assert loaded.weights_dtype == "float16"
    assert next(loaded.model.parameters()).dtype == torch.float32
    x = torch.rand(2, 1, 12, 25)
    with torch.inference_mode():
        a = torch.nn.functional.normalize(model(x).embedding, dim=1)
        b = torch.nn.functional.normalize(loaded.model(x).embedding, dim=1)
    assert (a * b).sum(dim=1).min().item() > 0.999
