"""ByteCover3 two-stage retrieval over a :class:`~streamcover.catalog.index.SearchView`.

Stage 1: each query chunk's top-K neighbours (K=50) in the HNSW graph; their
references are the candidates, ranked by their best neighbour similarity and
capped at ``max_candidates``. Stage 2: MaxMean between the query's chunks and each
candidate's full chunk set (``streamcover.model.maxmean.maxmean_padded``, batched
and masked), which also gives the alignment: for each query chunk, the best
reference chunk, its time offset and the similarity. References that stage 1 does
not reach are not scored (ByteCover3 gives them similarity 0).

Exhaustive mode scores every live reference with the same MaxMean, for evaluation
and for measuring how much stage 1 loses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamcover.catalog.index import SearchView, SnapshotWatcher
from streamcover.catalog.store import ModelMismatchError, normalise_rows

if TYPE_CHECKING:
    import torch

    from streamcover.config import CatalogSettings


@dataclass(frozen=True)
class SearchHit:
    """One ranked reference. ``alignment[i] = (query_start_s, ref_chunk_start_s, sim)``."""

    reference_id: str
    score: float
    metadata: dict[str, Any]
    alignment: list[tuple[float, float, float]]
    ref_key: int = -1
    ref_chunks: list[int] = field(default_factory=list)
    stage1_sim: float = float("nan")
    catalog_version: int = -1
    model_id: str | None = None


class TwoStageSearcher:
    """The library API the monitor calls. Thread-safe: each query uses one view throughout."""

    def __init__(
        self,
        source: SearchView | SnapshotWatcher,
        *,
        top_k: int = 50,
        max_candidates: int = 250,
        refine: int = 4,
        model_id: str | None = None,
        device: str = "cpu",
    ) -> None:
        self._source = source
        self.refine = refine
        self.top_k = top_k
        self.max_candidates = max_candidates
        self.model_id = model_id
        self.device = device
        if model_id is not None:
            self._check_model(self.view, model_id)

    @classmethod
    def open(
        cls,
        catalog_path: str | os.PathLike[str] | None = None,
        settings: CatalogSettings | None = None,
        *,
        watch: bool = False,
        model_id: str | None = None,
        verify: bool = True,
    ) -> TwoStageSearcher:
        """A searcher on a catalog directory; ``watch`` starts a :class:`SnapshotWatcher`."""
        from streamcover.config import get_settings

        s = settings or get_settings().catalog
        path = Path(catalog_path) if catalog_path is not None else s.path
        source: SearchView | SnapshotWatcher
        if watch:
            source = SnapshotWatcher(path, poll_seconds=s.snapshot_poll_seconds,
                                     ef_search=s.hnsw_ef_search, verify=verify).start()
        else:
            source = SearchView.open(path, ef_search=s.hnsw_ef_search, verify=verify)
        return cls(source, top_k=s.top_k, max_candidates=s.max_candidates, refine=s.stage1_refine,
                   model_id=model_id)

    @property
    def view(self) -> SearchView:
        src = self._source
        return src.current() if isinstance(src, SnapshotWatcher) else src

    def close(self) -> None:
        if isinstance(self._source, SnapshotWatcher):
            self._source.stop()

    @staticmethod
    def _check_model(view: SearchView, model_id: str) -> None:
        if view.model_id is not None and view.model_id != model_id:
            raise ModelMismatchError(
                f"query embeddings come from model {model_id!r} but catalog {view.catalog_path} "
                f"was built with {view.model_id!r}"
            )

    def _prepare(self, view: SearchView, query_vectors: np.ndarray, query_starts: Any,
                 model_id: str | None) -> tuple[np.ndarray, np.ndarray]:
        mid = model_id or self.model_id
        if mid is not None:
            self._check_model(view, mid)
        q = normalise_rows(query_vectors, "query")
        if q.shape[0] == 0:
            raise ValueError("query has no chunks")
        if q.shape[1] != view.dim:
            raise ModelMismatchError(
                f"query is {q.shape[1]}-d but catalog {view.catalog_path} holds {view.dim}-d "
                "embeddings"
            )
        starts = np.asarray(query_starts, dtype=np.float64).reshape(-1)
        if starts.shape[0] != q.shape[0]:
            raise ValueError(f"{q.shape[0]} query chunks but {starts.shape[0]} start times")
        return q, starts

    # ------------------------------------------------------------------ stage 1

    def candidates(self, view: SearchView, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidate reference keys (best first) and their best stage-1 similarity."""
        s1 = view.stage1(q, self.top_k, self.refine)
        keys = s1.ref_keys.reshape(-1)
        sims = s1.sims.reshape(-1)
        ok = keys >= 0
        keys, sims = keys[ok], sims[ok]
        if keys.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        order = np.argsort(-sims, kind="stable")
        keys, sims = keys[order], sims[order]
        uniq, first = np.unique(keys, return_index=True)
        sel = np.argsort(first, kind="stable")[: self.max_candidates]
        return uniq[sel], sims[first[sel]]

    # ------------------------------------------------------------------ stage 2

    def _gather(self, view: SearchView, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Padded float32 [R, L, D] chunk embeddings of ``keys``: one row gather per segment.

        Padding rows repeat a reference's last chunk (``maxmean_padded`` masks them), so the
        gather is a single fancy index on the memory map followed by one dtype conversion.
        """
        lay = view.layout
        lengths = lay.n_chunks[keys]
        lmax = int(lengths.max())
        steps = np.arange(lmax)
        segs = lay.segment[keys]
        first = segs[0]
        if (segs == first).all():
            rows = lay.row_start[keys][:, None] + np.minimum(steps[None, :], lengths[:, None] - 1)
            out = view.segments[int(first)][rows.ravel()].astype(np.float32)
            return out.reshape(keys.shape[0], lmax, view.dim), lengths
        out = np.empty((keys.shape[0], lmax, view.dim), np.float32)
        for seg in np.unique(segs):
            sel = np.flatnonzero(segs == seg)
            ln = lengths[sel]
            rows = lay.row_start[keys[sel]][:, None] + np.minimum(steps[None, :], ln[:, None] - 1)
            out[sel] = view.segments[int(seg)][rows.ravel()].reshape(sel.size, lmax, view.dim)
        return out, lengths

    def rerank(self, view: SearchView, q: np.ndarray, keys: np.ndarray,
               block_chunks: int = 65536) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """MaxMean of the query against each reference in ``keys``.

        Returns scores [R], best reference chunk [R, M] and its similarity [R, M].
        References are processed in blocks of about ``block_chunks`` padded rows.
        """
        import torch

        from streamcover.model.maxmean import maxmean_padded

        m = q.shape[0]
        scores = np.zeros(keys.shape[0], np.float32)
        best = np.zeros((keys.shape[0], m), np.int64)
        bsim = np.zeros((keys.shape[0], m), np.float32)
        if keys.size == 0:
            return scores, best, bsim
        qt = torch.from_numpy(q).to(self.device)
        lengths = view.layout.n_chunks[keys]
        # Sort by length so padding stays small inside a block.
        order = np.argsort(lengths, kind="stable")
        i = 0
        with torch.inference_mode():
            while i < order.size:
                # Ascending lengths: the block's padded length is that of its last member.
                j = i + 1
                while j < order.size and (j - i + 1) * int(lengths[order[j]]) <= block_chunks:
                    j += 1
                idx = order[i:j]
                refs, lens = self._gather(view, keys[idx])
                res = maxmean_padded(qt, _to_tensor(refs, self.device),
                                     torch.from_numpy(lens), normalized=True)
                scores[idx] = res.scores.float().cpu().numpy()
                best[idx] = res.best_ref_chunk.cpu().numpy()
                bsim[idx] = res.best_sim.float().cpu().numpy()
                i = j
        return scores, best, bsim

    # ------------------------------------------------------------------ API

    def search(
        self,
        query_vectors: np.ndarray,
        query_starts: Any,
        *,
        top_n: int = 10,
        model_id: str | None = None,
        exhaustive: bool = False,
    ) -> list[SearchHit]:
        """Ranked references for a query of M chunk embeddings [M, D] starting at ``query_starts``."""
        view = self.view
        q, starts = self._prepare(view, query_vectors, query_starts, model_id)
        if exhaustive:
            keys = view.layout.keys
            s1 = np.full(keys.shape[0], np.nan, np.float32)
        else:
            keys, s1 = self.candidates(view, q)
        scores, best, bsim = self.rerank(view, q, keys)
        order = np.argsort(-scores, kind="stable")[:top_n]
        meta = view.metadata([int(keys[i]) for i in order])
        hits = []
        for i in order:
            k = int(keys[i])
            rstarts = view.ref_starts(k)
            align = [
                (float(starts[j]), float(rstarts[best[i, j]]), float(bsim[i, j]))
                for j in range(q.shape[0])
            ]
            md = meta.get(k, {})
            hits.append(SearchHit(
                reference_id=str(md.get("id", k)), score=float(scores[i]), metadata=md,
                alignment=align, ref_key=k, ref_chunks=[int(b) for b in best[i]],
                stage1_sim=float(s1[i]), catalog_version=view.store_version,
                model_id=view.model_id,
            ))
        return hits

    def exhaustive_scores(self, query_vectors: np.ndarray,
                          model_id: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(reference keys, MaxMean scores) for every live reference, for evaluation."""
        view = self.view
        q, _ = self._prepare(view, query_vectors, np.zeros(len(query_vectors)), model_id)
        keys = view.layout.keys
        scores, _, _ = self.rerank(view, q, keys)
        return keys, scores

    def two_stage_scores(self, query_vectors: np.ndarray,
                         model_id: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(candidate keys, MaxMean scores) as the two-stage search computes them."""
        view = self.view
        q, _ = self._prepare(view, query_vectors, np.zeros(len(query_vectors)), model_id)
        keys, _ = self.candidates(view, q)
        scores, _, _ = self.rerank(view, q, keys)
        return keys, scores


def _to_tensor(x: np.ndarray, device: str) -> torch.Tensor:
    import torch

    return torch.from_numpy(x).to(device)
