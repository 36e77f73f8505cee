"""lookalike: reverse image search for catalogues of sold items, with price estimates."""

from lookalike.engine import Engine, LookalikeError, PriceEstimate, SearchHit, SearchResult
from lookalike.store import CatalogError, Item, ItemFilter

__version__ = "0.1.0"

__all__ = ["CatalogError", "Engine", "Item", "ItemFilter", "LookalikeError", "PriceEstimate", "SearchHit",
           "SearchResult", "__version__"]
