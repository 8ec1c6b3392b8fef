"""The progress bar long library jobs draw (catalog ingestion, calibration): one look for all."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(disabled: bool) -> Any:
    """A rich ``Progress`` with a ``note`` field per task, drawn on stderr when it is a
    terminal (off when ``disabled`` or when stderr is not one, so logs stay clean)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[note]}"),
                    disable=disabled or not sys.stderr.isatty(), transient=False)
