"""The progress bars of long library jobs (catalog ingestion, calibration, training): one look."""

from __future__ import annotations

import sys
from typing import Any


def progress_columns(label: str, stats: str | None = None, note: str | None = None) -> list[Any]:
    """A bar's rich columns: ``label``, the bar, done/total, ``stats`` (a task-field format),
    elapsed and remaining time, then ``note`` (a task-field format)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return [TextColumn(label), BarColumn(), MofNCompleteColumn(),
            *([TextColumn(stats)] if stats is not None else []),
            TimeElapsedColumn(), TimeRemainingColumn(),
            *([TextColumn(note)] if note is not None else [])]


def progress_bar(disabled: bool) -> Any:
    """A rich ``Progress`` with a ``note`` field per task, drawn on stderr when it is a
    terminal (off when ``disabled`` or when stderr is not one, so logs stay clean)."""
    from rich.progress import Progress

    return Progress(*progress_columns("[bold]{task.description}", note="{task.fields[note]}"),
                    disable=disabled or not sys.stderr.isatty(), transient=False)
