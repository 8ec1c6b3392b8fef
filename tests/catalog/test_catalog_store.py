"""The durable store: adds, removals, versions, model ids, crash safety, corruption."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from catalog_helpers import DIM, MODEL, as_input

from streamcover.catalog.errors import (
    CatalogCorruptError,
    CatalogLockedError,
    CatalogNotFoundError,
    ModelMismatchError,
)
from streamcover.catalog.records import ReferenceInput
from streamcover.catalog.store import SEGMENT_DIR, Catalog
from streamcover.catalog.synthetic import SyntheticRef
from streamcover.catalog.view import SearchView


def test_add_list_get_remove_and_version(tmp_path: Path, refs: list[SyntheticRef]) -> None:
    with Catalog.open(tmp_path / "c", "a", model_id=MODEL) as cat:
        assert cat.version == 0
        res = cat.add_references([as_input(r) for r in refs[:5]], MODEL)
        assert res.added == [r.id for r in refs[:5]] and res.skipped == []
        assert cat.version == 1
        listed = [r.id for r in cat.references()]
        assert listed == [r.id for r in refs[:5]]
        got = cat.get(refs[2].id)
        assert got.n_chunks == refs[2].vectors.shape[0]
        assert got.title == f"title {refs[2].id}" and got.extra == {"work": refs[2].work}
        stored = cat.ref_vectors(got.key).astype(np.float32)
        np.testing.assert_allclose(stored, refs[2].vectors, atol=2e-3)

        v = cat.remove(refs[2].id)
        assert v == 2 == cat.version
        assert not cat.has_reference(refs[2].id)
        assert refs[2].id not in [r.id for r in cat.references()]
        assert refs[2].id in [r.id for r in cat.references(include_removed=True)]
        with pytest.raises(KeyError, match=refs[2].id):
            cat.remove(refs[2].id)
        # Re-adding an already live id is a no-op (idempotent resume); a removed id may return.
        again = cat.add_references([as_input(r) for r in refs[:5]], MODEL)
        assert again.added == [refs[2].id]
        assert sorted(again.skipped) == sorted(r.id for i, r in enumerate(refs[:5]) if i != 2)
        assert cat.stats()["references"] == 5 and cat.stats()["removed"] == 1


def test_model_id_and_dim_refused(tmp_path: Path, refs: list[SyntheticRef]) -> None:
    with Catalog.open(tmp_path / "c", "a", model_id=MODEL) as cat:
        cat.add_references([as_input(refs[0])], MODEL)
        with pytest.raises(ModelMismatchError, match="other-model"):
            cat.add_references([as_input(refs[1])], "other-model")
        wide = ReferenceInput("wide", np.ones((3, DIM * 2)), np.arange(3) * 10.0)
        with pytest.raises(ModelMismatchError, match=f"{DIM}-d"):
            cat.add_references([wide], MODEL)
    with pytest.raises(ModelMismatchError):
        Catalog.open(tmp_path / "c", "r", model_id="other-model")


def test_bad_embeddings_named(tmp_path: Path) -> None:
    with Catalog.open(tmp_path / "c", "a", model_id=MODEL) as cat:
        bad = np.ones((4, DIM), np.float32)
        bad[1, 3] = np.nan
        with pytest.raises(ValueError, match=r"'nan-ref'.*NaN"):
            cat.add_references([ReferenceInput("nan-ref", bad, np.arange(4) * 10.0)], MODEL)
        with pytest.raises(ValueError, match=r"'zero-ref'.*all-zero"):
            cat.add_references(
                [ReferenceInput("zero-ref", np.zeros((2, DIM)), np.arange(2) * 10.0)], MODEL
            )
        with pytest.raises(ValueError, match="starts"):
            cat.add_references([ReferenceInput("x", np.ones((2, DIM)), np.arange(3.0))], MODEL)
        assert cat.version == 0 and cat.stats()["references"] == 0


def test_open_missing_and_single_writer(tmp_path: Path) -> None:
    with pytest.raises(CatalogNotFoundError, match="no catalog"):
        Catalog.open(tmp_path / "nope", "r")
    with Catalog.open(tmp_path / "c", "a"), pytest.raises(CatalogLockedError, match="LOCK"):
        Catalog.open(tmp_path / "c", "a")


_CRASHER = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {tests!r})
    from streamcover.catalog.store import Catalog
    from catalog_helpers import MODEL, N_WORKS, as_input, make_corpus
    crash_at = int(sys.argv[2])
    refs = list(make_corpus().references(N_WORKS))[:50]
    calls = 0
    real_bump = Catalog._bump
    def bump(self):
        # Called inside the metadata transaction, after the segment file is durable:
        # die here = crash between embedding write and metadata commit.
        global calls
        calls += 1
        if calls == crash_at:
            os._exit(9)
        return real_bump(self)
    Catalog._bump = bump
    with Catalog.open(sys.argv[1], "a", model_id=MODEL) as cat:
        for i in range(0, len(refs), 10):
            cat.add_references([as_input(r) for r in refs[i:i + 10]], MODEL)
    """
)


def test_crash_between_segment_write_and_commit_resumes_without_duplicates(
    tmp_path: Path, refs: list[SyntheticRef]
) -> None:
    path = tmp_path / "c"
    script = tmp_path / "crash.py"
    script.write_text(_CRASHER.format(tests=str(Path(__file__).parent)))
    proc = subprocess.run([sys.executable, str(script), str(path), "3"], capture_output=True)
    assert proc.returncode == 9, proc.stderr.decode()
    # Two batches committed; the third's segment is on disk but no row points at it.
    assert len(list((path / SEGMENT_DIR).iterdir())) == 3
    with Catalog.open(path, "a", model_id=MODEL) as cat:
        # The writer removed the orphan segment on open.
        assert len(list((path / SEGMENT_DIR).iterdir())) == 2
        assert cat.stats()["references"] == 20 and cat.stats()["dead_rows"] == 0
        assert cat.version == 2
        res = cat.add_references([as_input(r) for r in refs[:50]], MODEL)
        assert len(res.added) == 30 and len(res.skipped) == 20
        ids = [r.id for r in cat.references()]
        assert len(ids) == len(set(ids)) == 50
        cat.verify()
    view = SearchView.open(path)
    assert view.n_chunks == sum(r.vectors.shape[0] for r in refs[:50])


def test_killed_writer_leaves_consistent_store(tmp_path: Path) -> None:
    """SIGKILL mid-run: whatever committed is intact; resuming completes the set once."""
    path = tmp_path / "c"
    script = tmp_path / "crash.py"
    script.write_text(_CRASHER.format(tests=str(Path(__file__).parent)))
    proc = subprocess.Popen([sys.executable, str(script), str(path), "0"])
    # Kill it as soon as something has committed (or at once if it is already done).
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if (path / "catalog.sqlite").exists():
            try:
                with Catalog.open(path, "r") as c:
                    if c.version >= 1:
                        break
            except Exception:
                pass
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    subprocess.run([sys.executable, str(script), str(path), "0"], check=True)
    with Catalog.open(path, "r") as cat:
        ids = [r.id for r in cat.references()]
        assert len(ids) == len(set(ids)) == 50
        cat.verify()


def test_truncated_or_corrupt_segment_is_a_clear_error(
    make_catalog: Callable[..., Path],
) -> None:
    path = make_catalog(n=20, snapshot=False, batch=10)
    seg = sorted((path / SEGMENT_DIR).iterdir())[0]
    data = seg.read_bytes()
    # Flip one byte in the payload: same length, wrong checksum.
    seg.write_bytes(data[:-7] + bytes([data[-7] ^ 0x55]) + data[-6:])
    with pytest.raises(CatalogCorruptError, match="checksum"):
        SearchView.open(path)
    with Catalog.open(path, "r") as cat, pytest.raises(CatalogCorruptError, match="checksum"):
        cat.verify()
    # Truncate it: caught by the length check even without verifying checksums.
    seg.write_bytes(data[: len(data) - 100])
    with pytest.raises(CatalogCorruptError, match="truncated"):
        SearchView.open(path, verify=False)
    seg.unlink()
    with pytest.raises(CatalogCorruptError, match="missing"):
        SearchView.open(path, verify=False)


def test_compact_drops_tombstones_and_keeps_results(
    make_catalog: Callable[..., Path], refs: list[SyntheticRef]
) -> None:
    path = make_catalog(n=30, snapshot=False, batch=5)
    with Catalog.open(path, "a") as cat:
        for r in refs[:10]:
            cat.remove(r.id)
        before = cat.stats()
        assert before["segments"] == 6 and before["dead_rows"] > 0
        v = cat.version
        info = cat.compact()
        after = cat.stats()
        assert info["segments_before"] == 6 and after["segments"] == 1
        assert after["dead_rows"] == 0 and after["references"] == 20
        assert cat.version == v + 1
        assert len(list((path / SEGMENT_DIR).iterdir())) == 1
        for r in refs[10:30]:
            got = cat.ref_vectors(cat.get(r.id).key).astype(np.float32)
            np.testing.assert_allclose(got, r.vectors, atol=2e-3)
        cat.verify()
