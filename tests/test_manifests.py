"""The one manifest row reader behind the catalog and training manifests."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamcover.manifests import ManifestError, read_manifest_rows


def test_csv_and_jsonl_give_the_same_rows_with_line_numbers(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text(" id ,path\nr1,a.wav\nr2,b.wav\n")
    (tmp_path / "m.jsonl").write_text('{"id": "r1", "path": "a.wav"}\n\n{"id": "r2", "path": "b.wav"}\n')
    csv_rows = read_manifest_rows(tmp_path / "m.csv")
    json_rows = read_manifest_rows(tmp_path / "m.jsonl")
    assert [r for _, r in csv_rows] == [r for _, r in json_rows]
    assert [n for n, _ in csv_rows] == [2, 3]  # line 1 is the header
    assert [n for n, _ in json_rows] == [1, 3]  # the blank line is skipped, not renumbered


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("m.csv", "", "empty CSV"),
        ("m.jsonl", "[1, 2]\n", r"m\.jsonl:1: each line must be a JSON object"),
        ("m.jsonl", '{"a": 1}\n{oops\n', r"m\.jsonl:2: not JSON"),
        ("m.xlsx", "x", r"csv or \.jsonl"),
    ],
)
def test_bad_manifests_name_file_and_line(tmp_path: Path, name: str, text: str, match: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(ManifestError, match=match):
        read_manifest_rows(tmp_path / name)


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest_rows(tmp_path / "nope.csv")
