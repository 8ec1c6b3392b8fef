"""The catalog's errors: every message names the catalog or the file it is about."""

from __future__ import annotations


class CatalogError(Exception):
    """Base class for catalog errors; the message names the catalog or file."""


class CatalogNotFoundError(CatalogError):
    """Opening a catalog that does not exist in read mode."""


class CatalogCorruptError(CatalogError):
    """A segment, snapshot or database failed its length or checksum check."""


class ModelMismatchError(CatalogError):
    """Embeddings or queries from a model other than the catalog's."""


class CatalogLockedError(CatalogError):
    """Another process holds the catalog's writer lock."""
