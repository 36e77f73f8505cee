"""The engine: the one place that ties images, encoders, the store and the index."""

from lookalike.engine.assess import PriceEvaluation
from lookalike.engine.embedding import prepare_model
from lookalike.engine.engine import Engine
from lookalike.engine.evaluation import QueriesFileError, RetrievalEvaluation
from lookalike.engine.ingest import IndexReport
from lookalike.engine.pricing import PricedNeighbour, PriceEstimate
from lookalike.engine.results import SearchHit, SearchResult
from lookalike.errors import ErrorKind, ExistsError, LookalikeError, NotFoundError

__all__ = ["Engine", "ErrorKind", "ExistsError", "IndexReport", "LookalikeError",
           "NotFoundError", "PriceEstimate", "PriceEvaluation", "PricedNeighbour", "QueriesFileError",
           "RetrievalEvaluation", "SearchHit", "SearchResult", "prepare_model"]
