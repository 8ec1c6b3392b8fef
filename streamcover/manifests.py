"""Reading manifest files — CSV with a header row, or JSONL — for every command that takes one.

The catalog (references) and training (works and versions) want different columns, but the
same file formats and the same errors: each row comes back with its line number so callers
can name the line when a field is wrong.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file and line."""


def read_manifest_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, row)`` for every non-empty row of a CSV or JSONL manifest."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist")
    rows: list[tuple[int, dict[str, Any]]] = []
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None:
                raise ManifestError(f"{path}: empty CSV (needs a header row)")
            for line, row in enumerate(reader, start=2):
                rows.append((line, {k.strip(): v for k, v in row.items() if k}))
    elif suffix in JSONL_SUFFIXES:
        with path.open(encoding="utf-8") as fh:
            for line, text in enumerate(fh, start=1):
                if not text.strip():
                    continue
                rows.append((line, json_object(text, f"{path}:{line}")))
    else:
        raise ManifestError(f"{path}: manifest must be .csv or .jsonl")
    return rows


def json_object(text: str, where: str, not_json: str = "not JSON",
                not_object: str = "each line must be a JSON object") -> dict[str, Any]:
    """``text`` parsed as one JSON object, else a :class:`ManifestError` (a ValueError):
    "``where``: ``not_json``: <the parser's reason>" or "``where``: ``not_object``"."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{where}: {not_json}: {exc}") from exc
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: {not_object}")
    return obj
