"""The catalogue store: items, metadata and vectors in SQLite or PostgreSQL."""

from lookalike.store.catalog import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Catalog,
    CatalogError,
    Item,
    ItemFilter,
    LotChange,
    ModelMismatchError,
    Photo,
)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Catalog", "CatalogError", "Item", "ItemFilter", "LotChange", "ModelMismatchError", "Photo"]
