"""Sequencing rules: in order, duplicates, holes (silence vs discontinuity), reordering."""

from __future__ import annotations

import random

from streamcover.match.sequence import SKIPPED_RANGES, Action, Sequencer, Slot

N = 100  # samples per frame


def _slot(seq: int, n: int = N, start: int | None = None) -> Slot[int]:
    return Slot(seq, seq * N if start is None else start, n, seq)


def _kinds(actions: list[Action[int]]) -> list[tuple[str, int | None, int]]:
    return [(a.kind, a.slot.seq if a.slot else None, a.samples) for a in actions]


def test_in_order_frames_are_delivered_once() -> None:
    s: Sequencer[int] = Sequencer(max_gap_frames=2)
    out = [a for i in range(5) for a in s.push(_slot(i))]
    assert [a.slot.seq for a in out if a.slot] == [0, 1, 2, 3, 4]
    assert all(a.kind == "deliver" for a in out)
    assert s.state() == (5, 5 * N)


def test_duplicate_is_dropped_with_reason() -> None:
    s: Sequencer[int] = Sequencer(max_gap_frames=2)
    s.push(_slot(0))
    s.push(_slot(1))
    out = s.push(_slot(1))
    assert _kinds(out) == [("drop", 1, 0)]
    assert out[0].reason == "duplicate"
    # a duplicate of a frame still waiting in the reorder buffer is dropped too
    s.push(_slot(3))
    out = s.push(_slot(3))
    assert out[0].kind == "drop" and out[0].reason == "duplicate"


def test_swapped_frames_are_reordered() -> None:
    s: Sequencer[int] = Sequencer(max_gap_frames=2, reorder_frames=4)
    assert s.push(_slot(0))[0].kind == "deliver"
    assert s.push(_slot(2)) == []  # waits for 1
    out = s.push(_slot(1))
    assert _kinds(out) == [("deliver", 1, 0), ("deliver", 2, 0)]


def test_small_hole_is_filled_with_silence_when_buffer_overflows() -> None:
    s: Sequencer[int] = Sequencer(max_gap_frames=3, reorder_frames=2)
    s.push(_slot(0))
    assert s.push(_slot(2)) == []
    assert s.push(_slot(3)) == []
    out = s.push(_slot(4))  # 3 waiting > 2: give up on 1
    assert _kinds(out) == [("silence", 2, N), ("deliver", 2, 0), ("deliver", 3, 0), ("deliver", 4, 0)]
    # the lost frame arriving now is late, not delivered
    late = s.push(_slot(1))
    assert late[0].kind == "drop" and late[0].reason == "late"


def test_large_hole_is_a_discontinuity() -> None:
    s: Sequencer[int] = Sequencer(max_gap_frames=2, reorder_frames=0)
    s.push(_slot(0))
    out = s.push(_slot(10))
    assert _kinds(out) == [("discontinuity", 10, 9 * N), ("deliver", 10, 0)]
    assert s.state() == (11, 11 * N)


def test_flush_releases_waiting_frames_at_end_of_stream() -> None:
    s: Sequencer[int] = Sequencer(max_gap_frames=5, reorder_frames=8)
    s.push(_slot(0))
    s.push(_slot(3))
    out = s.flush()
    assert _kinds(out) == [("silence", 3, 2 * N), ("deliver", 3, 0)]


def test_time_hole_with_consecutive_seq_is_silence() -> None:
    s: Sequencer[int] = Sequencer(max_gap_frames=2, reorder_frames=0)
    s.push(_slot(0))
    out = s.push(_slot(1, start=N + 50))
    assert _kinds(out) == [("silence", 1, 50), ("deliver", 1, 0)]


def test_random_shuffles_deliver_each_frame_at_most_once_in_order() -> None:
    rng = random.Random(7)
    for _ in range(200):
        order = list(range(30))
        for i in range(len(order) - 1):  # local swaps only (reorder distance ≤ 3)
            if rng.random() < 0.3:
                j = min(len(order) - 1, i + rng.randint(1, 3))
                order[i], order[j] = order[j], order[i]
        dups = [x for x in order if rng.random() < 0.1]
        s: Sequencer[int] = Sequencer(max_gap_frames=3, reorder_frames=4)
        out: list[Action[int]] = []
        for x in order + dups:
            out += s.push(_slot(x))
        out += s.flush()
        delivered = [a.slot.seq for a in out if a.kind == "deliver" and a.slot]
        assert delivered == sorted(delivered)
        assert len(set(delivered)) == len(delivered)
        silence = sum(a.samples for a in out if a.kind in ("silence", "discontinuity"))
        # the stream clock is exact: delivered + filled = whole stream up to the last frame
        assert len(delivered) * N + silence == (max(delivered) + 1) * N


def test_time_hole_beyond_max_gap_samples_is_a_discontinuity_not_silence() -> None:
    s: Sequencer[int] = Sequencer(max_gap_frames=20, reorder_frames=0, max_gap_samples=5 * N)
    s.push(_slot(0))
    small = s.push(_slot(1, start=N + 5 * N))  # exactly the limit: filled
    assert _kinds(small) == [("silence", 1, 5 * N), ("deliver", 1, 0)]
    big = s.push(_slot(2, start=7 * N + 5 * N + 1))  # one sample more, consecutive seq
    assert _kinds(big) == [("discontinuity", 2, 5 * N + 1), ("deliver", 2, 0)]
    assert "hole of" in big[0].reason
    # a few missing frames whose hole is far too long: also a restart
    far = s.push(_slot(5, start=10**13))
    assert [a.kind for a in far] == ["discontinuity", "deliver"] and far[0].samples > 10**12


def test_huge_seq_jump_costs_one_range_and_late_frames_are_still_told_apart() -> None:
    import tracemalloc

    s: Sequencer[int] = Sequencer(max_gap_frames=3, reorder_frames=0)
    s.push(_slot(0))
    tracemalloc.start()
    out = s.push(_slot(10**7, start=N))  # no time hole: a renumbering, delivered
    out += s.flush()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000, peak  # the old set of skipped numbers took 577 MB here
    assert [a.kind for a in out] == ["deliver"] and len(s.skipped) == 1
    assert s.push(_slot(5 * 10**6, start=N))[0].reason == "late"
    assert s.push(_slot(0))[0].reason == "duplicate"
    for k in range(1, 200):  # many holes: only the newest SKIPPED_RANGES are kept
        s.push(_slot(10**7 + 2 * k, start=(k + 1) * N))
    assert len(s.skipped) <= SKIPPED_RANGES
    assert s.push(_slot(10**7 + 2 * 199 - 1, start=N))[0].reason == "late"
