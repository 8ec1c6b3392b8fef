"""ByteCover3 two-stage retrieval over a :class:`~streamcover.catalog.view.SearchView`.

Stage 1 (``view.stage1_candidates``): each query chunk's K nearest distinct references
(K=50) in the HNSW graph, found among its ``K * fetch_factor`` nearest chunks; their
union is the candidate set, ranked by best neighbour similarity and capped at
``max_candidates``; the references whose centroids are nearest the query's centroid join
it. Stage 2:
MaxMean in both directions between the query's chunks and each candidate's full chunk
set, combined by the score rule (length-weighted by default), from one similarity matrix over
the candidates' concatenated chunks and per-reference ``reduceat`` maxima (the value
``streamcover.model.maxmean.set_score`` defines); for the
top hits, the alignment: for each query chunk, the best reference chunk, its time
offset and the similarity. References that stage 1 does
not reach are not scored (ByteCover3 gives them similarity 0). Stage 3, when the caller
passes the query's features: the leaders are aligned against their stored features and
re-ranked by the fused detection score (``streamcover.match.verify``).

Exhaustive mode scores every live reference with the same score, for evaluation
and for measuring how much stage 1 loses.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamcover.catalog.errors import ModelMismatchError
from streamcover.catalog.factory import CATALOG_DEFAULTS
from streamcover.catalog.records import normalise_rows
from streamcover.catalog.view import SearchView, stage1_candidates
from streamcover.catalog.watcher import SnapshotWatcher
from streamcover.match.verify import Verifier
from streamcover.model.maxmean import SCORE_RULES, ScoreRule, combine_directions

if TYPE_CHECKING:
    from streamcover.catalog.view import Stage1Memo
    from streamcover.config import CatalogSettings, VerifySettings


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
    # Stage 3 (``streamcover.match.verify``): with query features, ``score`` is the fused
    # detection score in (0, 1) and ``maxmean`` the stage-2 score; ``align_score`` is NaN for
    # candidates that were not aligned. Without them ``score`` is the stage-2 score.
    maxmean: float = float("nan")
    align_score: float = float("nan")
    verified: bool = False


class TwoStageSearcher:
    """The library API the monitor calls. Thread-safe: each query uses one view throughout."""

    def __init__(
        self,
        source: SearchView | SnapshotWatcher,
        *,
        top_k: int = CATALOG_DEFAULTS.top_k,
        max_candidates: int = CATALOG_DEFAULTS.max_candidates,
        refine: int = CATALOG_DEFAULTS.stage1_refine,
        fetch_factor: float = CATALOG_DEFAULTS.stage1_fetch_factor,
        model_id: str | None = None,
        device: str = "cpu",
        screen: bool = CATALOG_DEFAULTS.stage2_screen,
        screen_leaders: int = CATALOG_DEFAULTS.stage2_screen_leaders,
        centroid_candidates: int = CATALOG_DEFAULTS.centroid_candidates,
        score_rule: ScoreRule = CATALOG_DEFAULTS.score_rule,
        verifier: Verifier | None = None,
    ) -> None:
        if score_rule not in SCORE_RULES:
            raise ValueError(f"unknown score rule {score_rule!r}; expected one of {SCORE_RULES}")
        self._source = source
        self.score_rule: ScoreRule = score_rule
        self.centroid_candidates = centroid_candidates
        self.screen = screen
        self.screen_leaders = screen_leaders
        self.refine = refine
        self.top_k = top_k
        self.fetch_factor = fetch_factor
        self.max_candidates = max_candidates
        self.model_id = model_id
        self.device = device
        self.verifier = verifier
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
        verify_settings: VerifySettings | None = None,
    ) -> TwoStageSearcher:
        """A searcher on a catalog directory; ``watch`` starts a :class:`SnapshotWatcher`.

        Stage 3 follows ``verify_settings`` (default: the settings' ``verify``); ``verify``
        is about checking the snapshot's files on load.

        It also caps this process's faiss and BLAS threads at ``search_threads``
        (:func:`streamcover.device.configure_search_threads`).
        """
        from streamcover.config import get_settings
        from streamcover.device import configure_search_threads

        s = settings or get_settings().catalog
        verifier = Verifier.from_settings(verify_settings or get_settings().verify)
        configure_search_threads(s.search_threads)
        path = Path(catalog_path) if catalog_path is not None else s.path
        source: SearchView | SnapshotWatcher
        if watch:
            source = SnapshotWatcher(path, poll_seconds=s.snapshot_poll_seconds,
                                     ef_search=s.hnsw_ef_search, verify=verify).start()
        else:
            source = SearchView.open(path, ef_search=s.hnsw_ef_search, verify=verify)
        return cls(source, top_k=s.top_k, max_candidates=s.max_candidates, refine=s.stage1_refine,
                   fetch_factor=s.stage1_fetch_factor, model_id=model_id,
                   screen=s.stage2_screen, screen_leaders=s.stage2_screen_leaders,
                   centroid_candidates=s.centroid_candidates, score_rule=s.score_rule,
                   verifier=verifier)

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

    def screens(self, view: SearchView) -> bool:
        """Whether stage 2 screens in the snapshot's projected space (see ``catalog.screen``)."""
        return self.screen and view.projected is not None

    @property
    def fetch(self) -> int:
        """Chunk neighbours fetched per query chunk to find ``top_k`` distinct references."""
        return max(self.top_k, round(self.top_k * self.fetch_factor))

    def candidates(self, view: SearchView, q: np.ndarray, chunk_ids: Sequence[Hashable] | None = None,
                   memo: Stage1Memo | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Candidate reference keys (best first) and their best stage-1 similarity, by
        :func:`~streamcover.catalog.view.stage1_candidates` with this searcher's knobs."""
        return stage1_candidates(view, q, top_k=self.top_k, fetch=self.fetch, refine=self.refine,
                                 max_candidates=self.max_candidates,
                                 centroid_candidates=self.centroid_candidates,
                                 exact=not self.screens(view), chunk_ids=chunk_ids, memo=memo)

    # ------------------------------------------------------------------ stage 2

    @staticmethod
    def _gather(view: SearchView, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The float16 chunk rows of ``keys``, concatenated in the order given, and each
        key's length.

        A reference's rows are contiguous in its segment, so each is one slice copy
        (1.7x faster than a fancy index over the same rows); no padding, no float32 copy.
        """
        lay = view.layout
        lengths = lay.n_chunks[keys].astype(np.int64)
        if not keys.size:
            return np.zeros((0, view.dim), np.float16), lengths
        segs = view.segments
        starts = lay.row_start[keys].tolist()
        parts = [segs[g][a : a + n] for g, a, n in
                 zip(lay.segment[keys].tolist(), starts, lengths.tolist(), strict=True)]
        return np.concatenate(parts), lengths

    def _sims(self, rows: np.ndarray, q: np.ndarray, exact: bool = False) -> np.ndarray:
        """Cosine similarities ``[rows, M]`` as float32.

        Screening (``exact=False``) multiplies in float16: on the CPU that is 3x faster
        than converting the rows to float32 first, but its float16 result carries an
        error of up to ~3e-4 near 1. ``exact`` converts first; :meth:`rerank` uses it to
        re-score the leaders, so reported scores and their order are float32-exact.
        """
        import torch

        r = torch.from_numpy(rows).to(self.device)
        with torch.inference_mode():
            if exact:
                return (r.float() @ torch.from_numpy(q).to(self.device).T).cpu().numpy()
            qq = torch.from_numpy(q.astype(np.float16)).to(self.device)
            return (r @ qq.T).float().cpu().numpy()

    def _maxmean(self, sims: np.ndarray, lengths: np.ndarray, m: int) -> np.ndarray:
        """Per-reference scores (``score_rule``) from the stacked similarities of their chunks."""
        starts = np.cumsum(lengths) - lengths
        query_first = np.maximum.reduceat(sims, starts, axis=0).mean(axis=1, dtype=np.float32)
        if self.score_rule == "shorter_first" and not (lengths < m).any():
            return query_first  # the other direction is not needed
        ref_first = (np.add.reduceat(sims.max(axis=1), starts) / lengths).astype(np.float32)
        out = combine_directions(query_first, ref_first, np.asarray(m, np.int64), lengths,
                                 self.score_rule)
        return out.astype(np.float32, copy=False)

    def rerank(self, view: SearchView, q: np.ndarray, keys: np.ndarray,
               block_rows: int = 65536, exact_top: int = 32,
               alignments: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
               screen: bool = False) -> np.ndarray:
        """Score (``score_rule``) of the query against each reference in ``keys`` -> ``[R]``.

        One similarity matrix per block of references (about ``block_rows`` chunks),
        then per-reference maxima with ``reduceat`` in both directions. The
        ``exact_top`` best are re-scored in float32; when ``alignments`` is given, it
        receives their alignments (as :meth:`align` computes them) from the same matrix.

        The screening pass runs in float16 over the full dimension, or, with ``screen``
        on a projected snapshot, in float32 over its projected rows. Then only the
        leaders' scores are exact: the others keep their screening score, capped just
        below the weakest leader's, so that sorting the scores puts the leaders first.
        """
        m = q.shape[0]
        scores = np.zeros(keys.shape[0], np.float32)
        proj = view.projected if screen else None
        qp = proj.project(q) if proj is not None else None
        lengths_all = view.layout.n_chunks[keys].astype(np.int64)
        i = 0
        while i < keys.size:
            total = np.cumsum(lengths_all[i:])
            j = i + max(1, int(np.searchsorted(total, block_rows, side="right")))
            if proj is not None and qp is not None:
                sims, lengths = proj.similarities(view.layout, view.segments, keys[i:j], qp)
            else:
                rows16, lengths = self._gather(view, keys[i:j])
                sims = self._sims(rows16, q)
            scores[i:j] = self._maxmean(sims, lengths, m)
            i = j
        if exact_top > 0 and keys.size:
            lead = np.argsort(-scores, kind="stable")[:exact_top]
            rows16, lengths = self._gather(view, keys[lead])
            sims = self._sims(rows16, q, exact=True)
            exact = self._maxmean(sims, lengths, m)
            if proj is not None and lead.size < keys.size:
                rest = np.ones(keys.size, bool)
                rest[lead] = False
                floor = np.nextafter(np.float32(exact.min()), np.float32(-np.inf))
                scores[rest] = np.minimum(scores[rest], floor)
            scores[lead] = exact
            if alignments is not None:
                lo = 0
                for k, n in zip(keys[lead].tolist(), lengths.tolist(), strict=True):
                    block = sims[lo : lo + n]
                    best = block.argmax(axis=0)
                    alignments[k] = (best, block[best, np.arange(m)])
                    lo += n
        return scores

    def align(self, view: SearchView, q: np.ndarray, key: int) -> tuple[np.ndarray, np.ndarray]:
        """For each query chunk, its best chunk of reference ``key`` and that similarity."""
        rows, _ = self._gather(view, np.array([key], np.int64))
        sims = self._sims(rows, q, exact=True)
        best = sims.argmax(axis=0)
        return best, sims[best, np.arange(q.shape[0])]

    # ------------------------------------------------------------------ API

    def search(
        self,
        query_vectors: np.ndarray,
        query_starts: Any,
        *,
        top_n: int = 10,
        model_id: str | None = None,
        exhaustive: bool = False,
        chunk_ids: Sequence[Hashable] | None = None,
        memo: Stage1Memo | None = None,
        query_features: np.ndarray | None = None,
    ) -> list[SearchHit]:
        """Ranked references for a query of M chunk embeddings [M, D] starting at ``query_starts``.

        A stream that queries repeatedly passes stable ``chunk_ids`` and its own
        :class:`Stage1Memo`, so only its new chunks are searched in stage 1. With
        ``query_features`` (the front end's frames [bins, T] from the query's start) and
        stage 3 on, the stage-2 leaders are aligned and ranked by the fused score
        (:mod:`streamcover.match.verify`).
        """
        view = self.view
        q, starts = self._prepare(view, query_vectors, query_starts, model_id)
        if exhaustive:
            keys = view.layout.keys
            s1 = np.full(keys.shape[0], np.nan, np.float32)
        else:
            keys, s1 = self.candidates(view, q, chunk_ids, memo)
        verifier = self.verifier if query_features is not None else None
        leaders = top_n if verifier is None else max(top_n, verifier.candidates)
        aligned: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        screen = not exhaustive and self.screens(view)
        scores = self.rerank(view, q, keys, exact_top=self.leaders(leaders, screen),
                             alignments=aligned, screen=screen)
        order = np.argsort(-scores, kind="stable")[:leaders]
        stage2 = scores[order]
        final = stage2
        align_scores = np.full(order.shape[0], np.nan, np.float32)
        if verifier is not None and query_features is not None and order.size:
            refs = [view.ref_features(int(keys[i])) for i in order[: verifier.candidates]]
            refs += [None] * (order.size - len(refs))
            checked = verifier.verify(query_features, refs, stage2)
            final, align_scores = checked.fused, checked.align
        rank = np.argsort(-final, kind="stable")[:top_n]
        meta = view.metadata([int(keys[order[r]]) for r in rank])
        hits = []
        for r in rank:
            i = order[r]
            k = int(keys[i])
            rstarts = view.ref_starts(k)
            best, bsim = aligned[k] if k in aligned else self.align(view, q, k)
            align = [
                (float(starts[j]), float(rstarts[best[j]]), float(bsim[j]))
                for j in range(q.shape[0])
            ]
            md = meta.get(k, {})
            hits.append(SearchHit(
                reference_id=str(md.get("id", k)), score=float(final[r]), metadata=md,
                alignment=align, ref_key=k, ref_chunks=[int(b) for b in best],
                stage1_sim=float(s1[i]), catalog_version=view.store_version,
                model_id=view.model_id, maxmean=float(stage2[r]),
                align_score=float(align_scores[r]), verified=verifier is not None,
            ))
        return hits

    def exhaustive_scores(self, query_vectors: np.ndarray,
                          model_id: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(reference keys, scores) for every live reference, for evaluation."""
        view = self.view
        q, _ = self._prepare(view, query_vectors, np.zeros(len(query_vectors)), model_id)
        keys = view.layout.keys
        return keys, self.rerank(view, q, keys)

    def two_stage_scores(self, query_vectors: np.ndarray,
                         model_id: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(candidate keys, scores) as the two-stage search computes them."""
        view = self.view
        q, _ = self._prepare(view, query_vectors, np.zeros(len(query_vectors)), model_id)
        keys, _ = self.candidates(view, q)
        screen = self.screens(view)
        return keys, self.rerank(view, q, keys, exact_top=self.leaders(10, screen), screen=screen)

    def leaders(self, top_n: int, screen: bool) -> int:
        """How many screened references are re-scored exactly."""
        return max(self.screen_leaders if screen else 32, 2 * top_n)

