"""Writing the calibration file: the upload part (``streamcover calibrate``) and the live
section (``--live``) are measured apart, and each run rewrites only its own part."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streamcover.match.calibration import CALIBRATION_FORMAT

LIVE_KEY = "live"


def read_doc(path: Path) -> dict[str, Any] | None:
    """The calibration document at ``path``; None when there is none (or it is unreadable,
    which the new run then replaces)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def with_live(existing: Mapping[str, Any] | None, live: Mapping[str, Any]) -> dict[str, Any]:
    """``existing`` with its live section set to ``live`` and every other key kept; a new
    document when there is none. Refuses one measured for another model."""
    model_id = live["model_id"]
    if existing is None:
        return {"format": CALIBRATION_FORMAT, "model_id": model_id, LIVE_KEY: dict(live)}
    if existing.get("model_id") not in (None, model_id):
        raise ValueError(f"the calibration file is for model {existing.get('model_id')!r}, "
                         f"not {model_id!r}: calibrate uploads for this model first, or write elsewhere")
    return {**existing, LIVE_KEY: dict(live)}


def keep_live(existing: Mapping[str, Any] | None, doc: Mapping[str, Any]) -> dict[str, Any]:
    """The upload run's new ``doc`` with the existing file's live section, when that was
    measured for the same model (a section for another model is dropped)."""
    out = dict(doc)
    live = (existing or {}).get(LIVE_KEY)
    if isinstance(live, Mapping) and live.get("model_id") == doc.get("model_id"):
        out[LIVE_KEY] = dict(live)
    return out


def write_doc(path: Path, doc: Mapping[str, Any]) -> None:
    """Write ``doc`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
