"""Constants and helpers shared by the catalog tests (and the crash-test subprocess)."""

from __future__ import annotations

from streamcover.catalog.factory import IndexParams
from streamcover.catalog.records import ReferenceInput
from streamcover.catalog.synthetic import SyntheticCorpus, SyntheticRef, SyntheticSpec

MODEL = "test-model-a"
DIM = 64
N_WORKS = 60
# Small HNSW parameters keep builds fast; efSearch is high enough to be near-exact here.
PARAMS = IndexParams("hnsw", m=16, ef_construction=64, ef_search=64)


def as_input(r: SyntheticRef) -> ReferenceInput:
    return ReferenceInput(
        r.id, r.vectors, r.starts, title=f"title {r.id}", artist=f"artist {r.work}",
        rights_holder="label", duration=float(r.starts[-1] + 20.0), extra={"work": r.work},
    )




def make_corpus() -> SyntheticCorpus:
    return SyntheticCorpus(SyntheticSpec(dim=DIM, n_genres=6, min_chunks=6, max_chunks=20, seed=3))
