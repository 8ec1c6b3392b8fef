"""Readable rendering of match events and set lists (rich), for the demo and the CLI."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from streamcover.events import MatchEvent

_console = Console()

_STYLE = {"match": "bold green", "update": "green", "final": "bold cyan",
          "setlist_segment": "bold magenta", "setlist": "bold blue"}


def clock(seconds: float) -> str:
    m, s = divmod(max(0.0, seconds), 60)
    return f"{int(m):d}:{s:04.1f}"


def describe(ev: MatchEvent) -> str:
    """One line a person can read."""
    title = ev.reference.get("title") or ev.reference_id or "-"
    artist = ev.reference.get("artist")
    who = f"{title}" + (f" — {artist}" if artist else "")
    span = f"{clock(ev.stream_span.start)}–{clock(ev.stream_span.end)}"
    ref = (f" (reference {clock(ev.reference_span.start)}–{clock(ev.reference_span.end)})"
           if ev.reference_span else "")
    if ev.kind == "final":
        if ev.reference_id is None:
            return f"[{ev.stream_id}] final: no catalogued work (best score {ev.score:.3f} < {ev.threshold:.3f})"
        return f"[{ev.stream_id}] final: {who}  score {ev.score:.3f}  at {span}{ref}"
    if ev.kind == "setlist":
        return f"[{ev.stream_id}] set list: {len(ev.setlist)} song(s)"
    verb = {"match": "MATCH", "update": "update", "setlist_segment": "song ended"}[ev.kind]
    return (f"[{ev.stream_id}] {verb}: {who}  score {ev.score:.3f} ({ev.chunks_used} chunk(s))  "
            f"at {span}{ref}  latency {ev.latency_ms:.0f} ms")


def print_event(ev: MatchEvent, console: Console | None = None) -> None:
    (console or _console).print(describe(ev), style=_STYLE.get(ev.kind, ""), highlight=False, markup=False)


def print_setlist(ev: MatchEvent, console: Console | None = None) -> None:
    table = Table(title=f"Set list of {ev.stream_id}", show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("from")
    table.add_column("to")
    table.add_column("work")
    table.add_column("artist")
    table.add_column("score", justify="right")
    for i, item in enumerate(ev.setlist, 1):
        table.add_row(str(i), clock(item.stream_span.start), clock(item.stream_span.end),
                      item.title or item.reference_id, item.artist or "", f"{item.score:.3f}")
    (console or _console).print(table)
