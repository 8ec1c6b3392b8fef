"""Serving the newest catalog without a restart: poll, build a new view, swap one reference."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from streamcover.catalog.snapshot import current_snapshot_name
from streamcover.catalog.store import Catalog
from streamcover.catalog.view import SearchView
from streamcover.log import get_logger

log = get_logger(__name__)


class SnapshotWatcher:
    """Keeps a current :class:`SearchView`, swapping in a new one when the catalog changes.

    ``poll`` (called by the background thread every ``poll_seconds``, or by hand)
    compares the ``CURRENT`` pointer and the catalog version with the view's; on a
    change it builds the new view off to the side and replaces ``self._view`` in one
    assignment, so a query in flight finishes on the view it started with.
    """

    def __init__(
        self,
        catalog_path: str | os.PathLike[str],
        *,
        poll_seconds: float = 5.0,
        ef_search: int | None = None,
        verify: bool = True,
        on_swap: Callable[[SearchView], None] | None = None,
    ) -> None:
        self.catalog_path = Path(catalog_path)
        self.poll_seconds = poll_seconds
        self.ef_search = ef_search
        self.verify = verify
        self.on_swap = on_swap
        self.swaps = 0
        self.last_error: BaseException | None = None
        self._view = SearchView.open(self.catalog_path, ef_search=ef_search, verify=verify)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def current(self) -> SearchView:
        return self._view

    def poll(self) -> bool:
        """Swap in a new view if the catalog or its snapshot changed; True if swapped."""
        view = self._view
        with Catalog.open(self.catalog_path, "r") as cat:
            version = cat.version
        name = current_snapshot_name(self.catalog_path)
        if version == view.store_version and name == view.snapshot_name:
            return False
        snap = view.snapshot if name == view.snapshot_name else None
        new = SearchView.open(self.catalog_path, ef_search=self.ef_search, verify=self.verify,
                              snapshot=snap)
        self._view = new
        self.swaps += 1
        log.info("snapshot.swapped", snapshot=new.snapshot_name, version=new.store_version,
                 delta_refs=int(new.delta_keys.size), dead=new.dead_in_snapshot)
        if self.on_swap is not None:
            self.on_swap(new)
        return True

    def start(self) -> SnapshotWatcher:
        self._thread = threading.Thread(target=self._loop, name="snapshot-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
                self.last_error = None
            except Exception as exc:  # keep serving the old view; report, retry next poll
                self.last_error = exc
                log.error("snapshot.poll_failed", error=str(exc))

    def __enter__(self) -> SnapshotWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
