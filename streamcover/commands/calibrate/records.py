"""The per-stream window records of a `streamcover calibrate` run (``--records``,
``.json.gz``): every stream's per-window hits, so a later sweep needs no search. Upload
records hold each window's top hits; live records (``--live``) also the per-chunk
similarities the set-list decisions are made on."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from streamcover.eval.detect import StreamResult
    from streamcover.eval.detect_live import LiveResult


class _Recorded(Protocol):
    def to_json(self) -> dict[str, Any]: ...


def write_records(path: Path, results: Sequence[_Recorded], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as fh:
        json.dump({"meta": meta, "streams": [r.to_json() for r in results]}, fh)
    tmp.replace(path)


def _read(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        doc = json.load(fh)
    return doc["meta"], doc["streams"]


def read_records(path: Path) -> tuple[dict[str, Any], list[StreamResult]]:
    from streamcover.eval.detect import StreamResult

    meta, streams = _read(path)
    return meta, [StreamResult.from_json(d) for d in streams]


def read_live_records(path: Path) -> tuple[dict[str, Any], list[LiveResult]]:
    from streamcover.eval.detect_live import LiveResult

    meta, streams = _read(path)
    if meta.get("protocol") != "live":
        raise ValueError(f"{path} holds upload records, not live ones")
    return meta, [LiveResult.from_json(d) for d in streams]
