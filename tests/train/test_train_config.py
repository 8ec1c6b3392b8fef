"""Training configs: inheritance through ``"base"``, and the shipped recipes it resolves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamcover.config import PROJECT_ROOT
from streamcover.train.config import deep_merge, load_train_config, resolve_train_config
from streamcover.train.loop import build_encoder_config

TRAIN_DIR = PROJECT_ROOT / "ops" / "train"
# ops/train/hpcp-t2-anneal.json as it was when the shipped weights were trained from it
# (a full copy, before configs could inherit).
SHIPPED_ANNEAL = Path(__file__).parent / "data" / "hpcp-t2-anneal.shipped.json"


def _write(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_shipped_weights_config_resolves_to_what_they_were_trained_with() -> None:
    resolved = resolve_train_config(TRAIN_DIR / "hpcp-t2-anneal.json")
    assert resolved == json.loads(SHIPPED_ANNEAL.read_text(encoding="utf-8"))
    # The file is a short diff now, not a copy.
    own = json.loads((TRAIN_DIR / "hpcp-t2-anneal.json").read_text(encoding="utf-8"))
    assert own["base"] == "hpcp-t2-crops.json" and len(own) < 6


def test_shipped_weights_have_the_anneal_configs_encoder() -> None:
    from streamcover.model.checkpoint import load_checkpoint

    shipped = load_checkpoint(PROJECT_ROOT / "models" / "streamcover-hpcp-compact.pt")
    enc = build_encoder_config(load_train_config(TRAIN_DIR / "hpcp-t2-anneal.json"))
    assert shipped.cfg.to_dict() == enc.to_dict()


def test_deep_merge_merges_objects_and_replaces_the_rest() -> None:
    base = {"a": 1, "d": {"x": 1, "y": [1, 2], "n": {"p": 1}}}
    out = deep_merge(base, {"d": {"y": [3], "n": {"q": 2}}, "b": 2})
    assert out == {"a": 1, "b": 2, "d": {"x": 1, "y": [3], "n": {"p": 1, "q": 2}}}
    assert base == {"a": 1, "d": {"x": 1, "y": [1, 2], "n": {"p": 1}}}  # not mutated


def test_a_chain_of_bases_applies_nearest_last(tmp_path: Path) -> None:
    _write(tmp_path / "root.json", {"name": "root", "seed": 1, "optim": {"lr": 0.01,
                                                                        "warmup_steps": 7}})
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub" / "mid.json", {"base": "../root.json", "name": "mid",
                                           "optim": {"lr": 0.002}})
    leaf = _write(tmp_path / "sub" / "leaf.json", {"base": "mid.json", "seed": 9})
    cfg = load_train_config(leaf)
    assert (cfg.name, cfg.seed, cfg.optim.lr, cfg.optim.warmup_steps) == ("mid", 9, 0.002, 7)
    assert "base" not in resolve_train_config(leaf)


def test_missing_base_cycle_and_bad_base_are_clear_errors(tmp_path: Path) -> None:
    orphan = _write(tmp_path / "orphan.json", {"base": "nowhere.json"})
    with pytest.raises(ValueError, match=r"orphan\.json.*'nowhere\.json' not found"):
        load_train_config(orphan)
    _write(tmp_path / "a.json", {"base": "b.json"})
    _write(tmp_path / "b.json", {"base": "a.json"})
    with pytest.raises(ValueError, match=r"cycle: a\.json -> b\.json -> a\.json"):
        load_train_config(tmp_path / "a.json")
    selfish = _write(tmp_path / "self.json", {"base": "self.json"})
    with pytest.raises(ValueError, match="cycle"):
        load_train_config(selfish)
    numeric = _write(tmp_path / "num.json", {"base": 3})
    with pytest.raises(ValueError, match="must name a config file"):
        load_train_config(numeric)
    with pytest.raises(ValueError, match=r"absent\.json: training config not found"):
        load_train_config(tmp_path / "absent.json")


def test_an_invalid_field_inherited_from_a_base_names_the_file(tmp_path: Path) -> None:
    _write(tmp_path / "base.json", {"loss": {"no_such_loss": 1}})
    child = _write(tmp_path / "child.json", {"base": "base.json", "name": "c"})
    with pytest.raises(ValueError, match=r"child\.json: invalid training config"):
        load_train_config(child)


def test_every_config_in_ops_train_is_used_or_a_base() -> None:
    """A config nobody runs, documents or extends is sprawl (git keeps old recipes)."""
    docs = "".join(p.read_text(encoding="utf-8") for p in [
        PROJECT_ROOT / "docs" / "training.md", *sorted((PROJECT_ROOT / "models").glob("*.md"))])
    configs = [p for p in TRAIN_DIR.glob("*.json") if "split" not in p.name]
    bases = {json.loads(p.read_text(encoding="utf-8")).get("base") for p in configs}
    for path in configs:
        assert path.name in docs or path.name in bases, path.name
