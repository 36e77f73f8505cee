"""The engine: the one place that ties images, encoders, the store and the index."""

from lookalike.engine.engine import (
    Engine,
    IndexReport,
    ItemExistsError,
    ItemNotFoundError,
    LookalikeError,
    PriceEvaluation,
    SearchHit,
    SearchResult,
)
from lookalike.engine.evaluation import QueriesFileError, RetrievalEvaluation
from lookalike.engine.pricing import PricedNeighbour, PriceEstimate

__all__ = ["Engine", "IndexReport", "ItemExistsError", "ItemNotFoundError",
           "LookalikeError", "PriceEstimate", "QueriesFileError", "RetrievalEvaluation", "PriceEvaluation", "PricedNeighbour",
           "SearchHit", "SearchResult"]
