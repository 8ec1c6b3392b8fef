from __future__ import annotations

import numpy as np
import pytest

from streamcover.eval.metrics import retrieval_metrics


def test_hand_computed_map_p10_mr1() -> None:
    # query 0: relevant at ranks 1 and 3 -> AP = (1/1 + 2/3) / 2; first hit rank 1
    # query 1: relevant at rank 2 only -> AP = 1/2; first hit rank 2
    sim = np.array([[0.9, 0.8, 0.7, 0.1], [0.9, 0.8, 0.1, 0.0]])
    rel = np.array([[True, False, True, False], [False, True, False, False]])
    m = retrieval_metrics(sim, rel)
    assert m.map == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)
    assert m.p_at_10 == pytest.approx((2 / 10 + 1 / 10) / 2)
    assert m.mr1 == pytest.approx(1.5)
    assert m.n_queries == 2


def test_excluded_items_are_not_ranked_and_queries_without_relevant_are_skipped() -> None:
    sim = np.array([[1.0, 0.2, 0.5], [0.3, 1.0, 0.1], [0.2, 0.1, 1.0]])
    rel = np.array([[True, True, False], [True, True, False], [False, False, True]])
    m = retrieval_metrics(sim, rel, exclude=np.eye(3, dtype=bool))
    # query 0: its own row excluded; the other version ranks 2nd behind item 2
    # query 1: the other version ranks 1st; query 2 has no relevant item left
    assert m.n_queries == 2
    assert m.map == pytest.approx((0.5 + 1.0) / 2)
    assert m.mr1 == pytest.approx(1.5)


def test_ties_give_chance_level_not_index_order() -> None:
    n = 400
    rel = np.zeros((1, n), dtype=bool)
    rel[0, :20] = True  # relevant items first in index order
    m = retrieval_metrics(np.zeros((1, n)), rel)
    assert m.map < 0.2  # index order would give 1.0


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="same 2-D shape"):
        retrieval_metrics(np.zeros((2, 3)), np.zeros((3, 2), dtype=bool))
