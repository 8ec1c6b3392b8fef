"""Fixtures for catalog tests: small structured synthetic catalogs on real disk with real faiss."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from catalog_helpers import MODEL, N_WORKS, PARAMS, as_input, make_corpus

from streamcover.catalog.factory import IndexParams
from streamcover.catalog.snapshot import build_snapshot
from streamcover.catalog.store import Catalog
from streamcover.catalog.synthetic import SyntheticCorpus, SyntheticRef


@pytest.fixture(scope="session", autouse=True)
def _single_thread_faiss() -> None:
    """Tiny indexes: OpenMP threads only spin against each other on a shared 2-core box."""
    import faiss

    faiss.omp_set_num_threads(1)


@pytest.fixture(scope="session")
def corpus() -> SyntheticCorpus:
    return make_corpus()


@pytest.fixture(scope="session")
def refs(corpus: SyntheticCorpus) -> list[SyntheticRef]:
    return list(corpus.references(N_WORKS))


@pytest.fixture
def make_catalog(
    tmp_path: Path, refs: list[SyntheticRef]
) -> Callable[..., Path]:
    """Create a catalog with ``refs[:n]`` in batches, optionally with a snapshot."""

    def make(n: int | None = None, snapshot: bool = True, batch: int = 40,
             params: IndexParams = PARAMS, name: str = "cat") -> Path:
        path = tmp_path / name
        chosen = refs if n is None else refs[:n]
        with Catalog.open(path, "a", model_id=MODEL) as cat:
            for i in range(0, len(chosen), batch):
                cat.add_references([as_input(r) for r in chosen[i : i + batch]], MODEL)
            if snapshot:
                build_snapshot(cat, params)
        return path

    return make
