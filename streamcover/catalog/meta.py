"""What a catalog is bound to, kept in its ``meta`` table, and the checks that hold it.

The first add records the model id and embedding dimension, the hop and speed renders
the references were chunked at, and the frame rate and width of their stored features;
every later writer or query must match them, because references made otherwise would not
be scored alike. A mismatch is refused before any file is written. :class:`CatalogMeta`
is the part of :class:`~streamcover.catalog.store.Catalog` that reads and binds them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from streamcover.catalog.database import Mode, transaction
from streamcover.catalog.errors import CatalogError, ModelMismatchError


class CatalogMeta:
    """The ``meta`` table of a catalog: its version counter and what it is bound to."""

    path: Path
    mode: Mode
    _conn: sqlite3.Connection

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @property
    def version(self) -> int:
        """Monotonic counter, bumped by every committed change."""
        return int(self._meta("version") or 0)

    def _bump(self) -> int:
        v = self.version + 1
        self._conn.execute("UPDATE meta SET value = ? WHERE key = 'version'", (str(v),))
        return v

    @property
    def model_id(self) -> str | None:
        return self._meta("model_id")

    @property
    def dim(self) -> int | None:
        d = self._meta("dim")
        return None if d is None else int(d)

    @property
    def reference_hop_seconds(self) -> float | None:
        """The hop the references were chunked at (None: a catalog from before it was
        recorded, built at the then query hop of 10 s)."""
        h = self._meta("reference_hop_seconds")
        return None if h is None else float(h)

    @property
    def reference_speeds(self) -> tuple[float, ...]:
        """The playback speeds the references were also rendered at (``catalog.reference_speeds``);
        empty for a catalog from before speed renders, which has none."""
        s = self._meta("reference_speeds")
        return tuple(float(x) for x in json.loads(s)) if s else ()

    @property
    def feature_fps(self) -> float | None:
        f = self._meta("feature_fps")
        return None if f is None else float(f)

    def _count_refs(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM refs").fetchone()[0])

    def check_reference_grid(self, hop_s: float, speeds: Sequence[float] = ()) -> None:
        """Refuse to add references chunked at another hop or rendered at other speeds than
        the catalog's: its references would no longer be scored alike."""
        self._check_hop(hop_s)
        if self._count_refs() == 0 and self._meta("reference_speeds") is None:
            return
        have, want = self.reference_speeds, tuple(float(x) for x in speeds)
        if have != want:
            raise CatalogError(
                f"catalog {self.path} holds references rendered at speeds "
                f"{', '.join(f'{x:g}' for x in have) or 'none'}, not "
                f"{', '.join(f'{x:g}' for x in want) or 'none'}; rebuild it with "
                "`streamcover catalog reembed` or use the catalog's catalog.reference_speeds"
            )

    def _bind_reference_grid(self, hop_s: float, speeds: Sequence[float]) -> None:
        """Inside a transaction: check the grid again and record it on first use."""
        self.check_reference_grid(hop_s, speeds)
        self._bind_meta("reference_hop_seconds", hop_s, "references at hop (s)")
        if self._meta("reference_speeds") is None:
            self._conn.execute("INSERT INTO meta VALUES (?, ?)", (
                "reference_speeds", json.dumps([float(x) for x in speeds])))

    def _check_meta(self, key: str, value: float, what: str) -> bool:
        """Whether ``key`` is still unrecorded; a different recorded value is an error."""
        have = self._meta(key)
        if have is not None and abs(float(have) - float(value)) > 1e-9:
            raise CatalogError(
                f"catalog {self.path} holds {what} {float(have):g}, not {float(value):g}; "
                "rebuild it with `streamcover catalog reembed` or use the catalog's setting"
            )
        return have is None

    def _bind_meta(self, key: str, value: float, what: str) -> None:
        """Inside a transaction: record ``key`` on first use, refuse a different value later."""
        if self._check_meta(key, value, what):
            self._conn.execute("INSERT INTO meta VALUES (?, ?)", (key, repr(float(value))))

    def _check_hop(self, hop_s: float) -> None:
        if self._meta("reference_hop_seconds") is None and self._count_refs() > 0:
            raise CatalogError(
                f"catalog {self.path} predates catalog.reference_hop_seconds (its "
                "references sit on the 10 s query grid); rebuild it with "
                "`streamcover catalog reembed` before adding to it"
            )
        self._check_meta("reference_hop_seconds", hop_s, "references at hop (s)")

    def check_model(self, model_id: str, what: str = "query") -> None:
        """Refuse a query or embeddings made by a model other than the catalog's."""
        mine = self.model_id
        if mine is not None and mine != model_id:
            raise ModelMismatchError(
                f"{what} comes from model {model_id!r} but catalog {self.path} was built with "
                f"{mine!r}; re-embed the catalog (`streamcover catalog reembed`) or use that model"
            )

    def _bind_model(self, model_id: str | None, dim: int | None) -> None:
        if model_id is not None:
            self.check_model(model_id, "this writer")
        if dim is not None and self.dim is not None and self.dim != dim:
            raise ModelMismatchError(
                f"catalog {self.path} holds {self.dim}-d embeddings, not {dim}-d"
            )
        if self.mode == "r":
            return
        with transaction(self._conn):
            if model_id is not None and self.model_id is None:
                self._conn.execute("INSERT INTO meta VALUES ('model_id', ?)", (model_id,))
            if dim is not None and self.dim is None:
                self._conn.execute("INSERT INTO meta VALUES ('dim', ?)", (str(dim),))
