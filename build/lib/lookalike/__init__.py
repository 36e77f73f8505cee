"""lookalike: reverse image search for catalogues of sold items, with price estimates."""

from lookalike.config import Settings
from lookalike.engine import Engine, PriceEstimate, SearchHit, SearchResult
from lookalike.errors import ErrorKind, LookalikeError
from lookalike.store import CatalogError, Item, ItemFilter

__version__ = "0.1.0"

__all__ = ["CatalogError", "Engine", "ErrorKind", "Item", "ItemFilter", "LookalikeError", "PriceEstimate", "SearchHit",
           "SearchResult", "Settings", "__version__"]
