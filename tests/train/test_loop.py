from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import TINY_ENCODER

from streamcover.data.shs import ShsData
from streamcover.model.checkpoint import CheckpointError, load_checkpoint
from streamcover.train.config import TrainConfig, load_train_config
from streamcover.train.loop import TrainError, build_encoder_config, train


def _config(**kw: object) -> TrainConfig:
    base = {
        "name": "tiny", "encoder_overrides": TINY_ENCODER, "max_steps": 4,
        "val_every_steps": 2, "checkpoint_every_steps": 1, "threads": 1, "device": "cpu",
        "data": {"works_per_batch": 3, "versions_per_work": 2, "full_max_chunks": 2},
        "loss": {"map_weight": 0.5}, "optim": {"warmup_steps": 1},
    }
    base.update(kw)
    return TrainConfig.model_validate(base)


def _parts(data: ShsData) -> tuple:
    works = np.unique(data.tracks.works)
    return data.tracks.select_works(works[:18]), data.tracks.select_works(works[18:21])


def test_train_logs_validates_and_resumes_to_the_same_weights(
        shs_real_slice: ShsData, tmp_path: Path) -> None:
    tr, va = _parts(shs_real_slice)
    straight = train(_config(), tr, va, tmp_path / "a", progress=False)
    assert straight.steps == 4
    # same run in two invocations: 2 steps, then resume to 4
    first = train(_config(max_steps=2), tr, va, tmp_path / "b", progress=False)
    assert first.steps == 2
    resumed = train(_config(), tr, va, tmp_path / "b", progress=False)
    assert resumed.steps == 4
    sa = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    sb = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for k, v in sa["model"].items():
        assert torch.allclose(v.float(), sb["model"][k].float(), atol=1e-5), k
    assert sb["step"] == 4

    rows = list(csv.DictReader((tmp_path / "a" / "train_log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(float(r["total"]) > 0 and r["lac"] and r["map"] for r in rows)
    val = list(csv.DictReader((tmp_path / "a" / "val_log.csv").open()))
    assert [int(r["step"]) for r in val] == [2, 4]
    assert all(0 < float(r["map_full"]) <= 1 and 0 < float(r["map_30s"]) <= 1 for r in val)
    best = load_checkpoint(tmp_path / "a" / "best.pt")
    assert best.cfg == build_encoder_config(_config())
    assert best.provenance.steps in (2, 4) and "val_map_full" in best.provenance.metrics
    # last.pt is not a model: loading it as one says which file to use instead.
    with pytest.raises(CheckpointError, match=r"resumable state.*best\.pt"):
        load_checkpoint(tmp_path / "a" / "last.pt")


def test_resume_refuses_a_different_config(shs_real_slice: ShsData, tmp_path: Path) -> None:
    tr, _va = _parts(shs_real_slice)
    train(_config(max_steps=1), tr, None, tmp_path / "r", progress=False)
    with pytest.raises(TrainError, match="different config"):
        train(_config(max_steps=2, seed=99), tr, None, tmp_path / "r", progress=False)
    # raising max_steps is a legitimate resume
    assert train(_config(max_steps=2), tr, None, tmp_path / "r", progress=False).steps == 2
    # a new run may warm-start from it (a different loss recipe, same encoder and classes)
    warm = train(_config(max_steps=1, loss={"global_level": "chunk"}), tr, None,
                 tmp_path / "w", progress=False, init_from=tmp_path / "r" / "last.pt")
    assert warm.steps == 1
    init = json.loads((tmp_path / "w" / "init.json").read_text())
    assert init["source_step"] == 2 and "classifier.weight" in init["heads_loaded"]
    with pytest.raises(TrainError, match="encoder config differs"):
        train(_config(max_steps=1, encoder_overrides={**TINY_ENCODER, "ibn": False}), tr, None,
              tmp_path / "x", progress=False, init_from=tmp_path / "r" / "last.pt")


def test_weight_average_is_validated_saved_resumed_and_warm_starts(
        shs_real_slice: ShsData, tmp_path: Path) -> None:
    """optim.ema_decay: best.pt and validation use the average, which lags the weights."""
    tr, va = _parts(shs_real_slice)
    ema_cfg = _config(val_every_steps=4, optim={"warmup_steps": 1, "ema_decay": 0.5})
    train(ema_cfg, tr, va, tmp_path / "a", progress=False)
    state = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    average = {k[len("module."):]: v for k, v in state["ema"].items() if k.startswith("module.")}
    assert int(state["ema"]["n_averaged"]) == 4
    best = load_checkpoint(tmp_path / "a" / "best.pt").model.state_dict()
    floats = [k for k, v in best.items() if v.dtype.is_floating_point]
    for k in floats:  # validated at step 4 and saved: the average, not the trained weights
        assert torch.allclose(best[k].float(), average[k].float(), atol=1e-6), k
    assert any(not torch.allclose(average[k].float(), state["model"][k].float(), atol=1e-4)
               for k in floats)
    # An interrupted run resumes its average too.
    train(ema_cfg.model_copy(update={"max_steps": 2}), tr, va, tmp_path / "b", progress=False)
    train(ema_cfg, tr, va, tmp_path / "b", progress=False)
    resumed = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for k, v in state["ema"].items():
        assert torch.allclose(v.float(), resumed["ema"][k].float(), atol=1e-5), k
    # A run without an average cannot be resumed with one.
    train(_config(max_steps=1), tr, None, tmp_path / "plain", progress=False)
    with pytest.raises(TrainError, match="different config"):
        train(ema_cfg, tr, None, tmp_path / "plain", progress=False)
    # A warm start from it takes the average (what the run validated).
    train(_config(max_steps=1, optim={"warmup_steps": 1, "lr": 1e-12}), tr, None,
          tmp_path / "w", progress=False, init_from=tmp_path / "a" / "last.pt")
    assert json.loads((tmp_path / "w" / "init.json").read_text())["weights"] == "average"
    warm = torch.load(tmp_path / "w" / "last.pt", weights_only=True)["model"]
    for k in floats:
        if "running" not in k:
            assert torch.allclose(warm[k].float(), average[k].float(), atol=1e-6), k


def test_warm_start_from_a_shipped_model_checkpoint(shs_real_slice: ShsData,
                                                    tmp_path: Path) -> None:
    """Fine-tuning a shipped model: --init-from takes a model .pt; the heads start fresh."""
    from streamcover.model.checkpoint import save_checkpoint
    from streamcover.model.net import CoverEncoder

    tr, _va = _parts(shs_real_slice)
    enc_cfg = build_encoder_config(_config())
    torch.manual_seed(5)
    shipped = CoverEncoder(enc_cfg)
    model_pt = tmp_path / "shipped.pt"
    save_checkpoint(model_pt, shipped, enc_cfg)
    # One step at a negligible lr: the run's checkpoint holds the shipped weights.
    train(_config(max_steps=1, optim={"warmup_steps": 1, "lr": 1e-12}), tr, None,
          tmp_path / "ft", progress=False, init_from=model_pt)
    init = json.loads((tmp_path / "ft" / "init.json").read_text())
    assert init["kind"] == "model checkpoint" and init["heads_loaded"] == []
    state = torch.load(tmp_path / "ft" / "last.pt", weights_only=True)
    for k, v in shipped.state_dict().items():
        if v.dtype.is_floating_point and "running" not in k:
            assert torch.allclose(state["model"][k].float(), v.float(), atol=1e-6), k
    # Another architecture's model, or a file that is not a checkpoint, is refused clearly.
    other = CoverEncoder(build_encoder_config(
        _config(encoder_overrides={**TINY_ENCODER, "ibn": False})))
    save_checkpoint(tmp_path / "other.pt", other, other.cfg)
    with pytest.raises(TrainError, match="neither a training state nor a usable model"):
        train(_config(max_steps=1), tr, None, tmp_path / "y", progress=False,
              init_from=tmp_path / "other.pt")
    # A model trained at another time resolution seeds a run at this one: strides change
    # no parameter's shape, and the change is recorded.
    finer = _config(encoder_overrides={**TINY_ENCODER, "stem_pool_stride": None})
    train(finer.model_copy(update={"max_steps": 1}), tr, None, tmp_path / "fine",
          progress=False, init_from=model_pt)
    init = json.loads((tmp_path / "fine" / "init.json").read_text())
    assert init["config_changes"] == {"stem_pool_stride": [list(enc_cfg.stem_pool_stride), None]}
    # A deeper encoder too: the source's blocks come first, the new ones start as identities.
    deeper = _config(encoder_overrides={**TINY_ENCODER, "layers": [1, 2, 1, 2]})
    train(deeper.model_copy(update={"max_steps": 1}), tr, None, tmp_path / "deep",
          progress=False, init_from=model_pt)
    init = json.loads((tmp_path / "deep" / "init.json").read_text())
    assert init["new_blocks"] == ["layers.1.1", "layers.3.1"]
    assert init["config_changes"] == {"layers": [[1, 1, 1, 1], [1, 2, 1, 2]]}
    shallower = _config(encoder_overrides={**TINY_ENCODER, "layers": [1, 1, 1, 1]})
    with pytest.raises(TrainError, match="strides and added blocks"):
        train(shallower.model_copy(update={"max_steps": 1}), tr, None, tmp_path / "shallow",
              progress=False, init_from=tmp_path / "deep" / "last.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainError, match=r"junk\.pt"):
        train(_config(max_steps=1), tr, None, tmp_path / "z", progress=False,
              init_from=tmp_path / "junk.pt")


def test_shipped_configs_parse_and_build(tmp_path: Path) -> None:
    from streamcover.config import PROJECT_ROOT

    configs = sorted((PROJECT_ROOT / "ops" / "train").glob("*.json"))
    configs = [c for c in configs if "split" not in c.name]
    assert len(configs) >= 2
    from streamcover.model.net import CoverEncoder

    for path in configs:
        enc = build_encoder_config(load_train_config(path))
        # Every shipped recipe's network builds and embeds a 20 s chunk (43 frames at both
        # front ends' default 2.15 frames/s).
        with torch.no_grad():
            out = CoverEncoder(enc).eval()(torch.rand(2, 1, enc.in_bins, 43))
        assert out.embedding.shape == (2, enc.embed_dim), path.name
        assert torch.isfinite(out.embedding).all(), path.name
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"loss": {"no_such_loss": 1}}))
    with pytest.raises(ValueError, match=r"bad\.json"):
        load_train_config(bad)


def test_shipped_hpcp_encoder_is_exactly_transposition_invariant() -> None:
    from streamcover.config import PROJECT_ROOT
    from streamcover.model.net import CoverEncoder

    cfg = load_train_config(PROJECT_ROOT / "ops" / "train" / "hpcp-compact.json")
    torch.manual_seed(0)
    model = CoverEncoder(build_encoder_config(cfg)).eval()
    x = torch.rand(3, 1, 12, 43)
    with torch.no_grad():
        base = model(x).embedding
        for shift in (1, 2, 5, 7):
            rolled = model(torch.roll(x, shift, dims=2)).embedding
            assert torch.allclose(rolled, base, atol=1e-5), shift
