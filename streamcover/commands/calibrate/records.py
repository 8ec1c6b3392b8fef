"""The per-stream window records of a `streamcover calibrate` run (``--records``,
``.json.gz``): every stream's per-window hits, so a later sweep needs no search."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamcover.eval.detect import StreamResult


def write_records(path: Path, results: Sequence[StreamResult], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as fh:
        json.dump({"meta": meta, "streams": [r.to_json() for r in results]}, fh)
    tmp.replace(path)


def read_records(path: Path) -> tuple[dict[str, Any], list[StreamResult]]:
    from streamcover.eval.detect import StreamResult

    with gzip.open(path, "rt", encoding="utf-8") as fh:
        doc = json.load(fh)
    return doc["meta"], [StreamResult.from_json(d) for d in doc["streams"]]
