"""Frame sequencing for one stream: gaps, duplicates and reordering, decided once, purely.

Producers number frames per stream (``seq``) and say where each starts (``start_sample``).
Kafka keeps a partition in order, but producers retry, restart and race, so the monitor
sees duplicates, holes and (rarely) swapped frames. :class:`Sequencer` turns that into an
ordered list of actions the monitor applies to its audio buffer:

* ``deliver`` — append this frame's samples;
* ``silence`` — a hole of at most ``max_gap_frames`` frames and at most ``max_gap_samples``
  samples was given up on: insert that many samples of silence first, so the stream clock
  stays right;
* ``discontinuity`` — a hole larger than either: restart the windowing at the new position
  (the accumulated evidence stays). A hole is never filled beyond ``max_gap_samples``: its
  size comes from the producer (``start_sample``), so it is untrusted;
* ``drop`` — a duplicate, or a frame that arrived after its place was given up (``late``).

A frame that arrives early waits in a small reorder buffer (``reorder_frames``); when the
buffer is full the oldest hole is given up. Nothing here does I/O, so every rule is tested.

Memory is bounded whatever the numbering: the reorder buffer holds at most
``reorder_frames + 1`` frames, and the given-up sequence numbers (to tell ``late`` from
``duplicate``) are kept as at most :data:`SKIPPED_RANGES` ranges, so a jump of 10⁷ in
``seq`` costs one range, not a set of ten million numbers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

ActionKind = Literal["deliver", "silence", "discontinuity", "drop"]

# Given-up seq ranges remembered for the late/duplicate distinction (oldest forgotten first).
SKIPPED_RANGES = 64


@dataclass(frozen=True)
class Slot(Generic[T]):
    """One numbered frame: where it starts (in samples) and how long it is."""

    seq: int
    start_sample: int
    num_samples: int
    item: T


@dataclass(frozen=True)
class Action(Generic[T]):
    kind: ActionKind
    slot: Slot[T] | None = None
    # silence: samples to insert; discontinuity: samples skipped
    samples: int = 0
    reason: str = ""


@dataclass
class Sequencer(Generic[T]):
    """Orders the frames of one stream (see module docstring)."""

    max_gap_frames: int
    reorder_frames: int = 4
    next_seq: int = 0
    next_sample: int = 0
    # Largest hole (in samples) filled with silence; None: bounded by max_gap_frames only.
    max_gap_samples: int | None = None
    pending: dict[int, Slot[T]] = field(default_factory=dict)
    # Recently given-up sequence numbers as half-open ranges [lo, hi), newest last.
    skipped: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=SKIPPED_RANGES))

    def was_skipped(self, seq: int) -> bool:
        """Whether ``seq`` is in a recently given-up hole (a late frame, not a duplicate)."""
        return any(lo <= seq < hi for lo, hi in self.skipped)

    def push(self, slot: Slot[T]) -> list[Action[T]]:
        """Accept one frame; returns the actions it releases, in order."""
        if slot.seq < self.next_seq:
            reason = "late" if self.was_skipped(slot.seq) else "duplicate"
            return [Action("drop", slot, reason=reason)]
        if slot.seq in self.pending:
            return [Action("drop", slot, reason="duplicate")]
        self.pending[slot.seq] = slot
        actions: list[Action[T]] = []
        self._drain(actions)
        while len(self.pending) > self.reorder_frames:
            self._give_up_hole(actions)
            self._drain(actions)
        return actions

    def flush(self) -> list[Action[T]]:
        """End of stream: give up every hole and release everything still waiting."""
        actions: list[Action[T]] = []
        self._drain(actions)
        while self.pending:
            self._give_up_hole(actions)
            self._drain(actions)
        return actions

    def _drain(self, actions: list[Action[T]]) -> None:
        while self.next_seq in self.pending:
            slot = self.pending.pop(self.next_seq)
            if slot.start_sample < self.next_sample:
                # Overlaps audio already delivered (a producer restarted mid-stream with a
                # new numbering is not this case; this is a bad frame): keep the clock monotone.
                actions.append(Action("drop", slot, reason="overlap"))
                self.next_seq += 1
                continue
            if slot.start_sample > self.next_sample:
                # Numbered consecutively but with a hole in time: treat like a lost frame.
                self._hole(actions, slot, missing_frames=1)
            actions.append(Action("deliver", slot))
            self.next_seq = slot.seq + 1
            self.next_sample = slot.start_sample + slot.num_samples

    def _give_up_hole(self, actions: list[Action[T]]) -> None:
        first = min(self.pending)
        slot = self.pending[first]
        missing = first - self.next_seq
        if missing > 0:
            self.skipped.append((self.next_seq, first))
        if slot.start_sample > self.next_sample:
            self._hole(actions, slot, missing_frames=missing)
            self.next_sample = slot.start_sample
        self.next_seq = first

    def _hole(self, actions: list[Action[T]], slot: Slot[T], missing_frames: int) -> None:
        gap = slot.start_sample - self.next_sample
        if gap <= 0:
            return
        small = self.max_gap_samples is None or gap <= self.max_gap_samples
        if missing_frames <= self.max_gap_frames and small:
            actions.append(Action("silence", slot, samples=gap, reason=f"{missing_frames} frame(s) missing"))
        else:
            why = f"{missing_frames} frames missing" if small else f"a hole of {gap} samples"
            actions.append(Action("discontinuity", slot, samples=gap, reason=why))
        self.next_sample = slot.start_sample

    def state(self) -> tuple[int, int]:
        """The part worth checkpointing (waiting frames are re-read from Kafka on replay)."""
        return self.next_seq, self.next_sample
