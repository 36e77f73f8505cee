"""Retrieval quality on the user's own catalogue: recall@k, mAP@k, MRR.

A queries file is a CSV with the columns ``query_image`` (one photo, or several
photos of one new item separated by ``|``: one query) and ``relevant_ids`` (item
ids separated by ``|``); image paths are relative to the CSV's folder.

Definitions (the conventions of Stanford Online Products and of most image
retrieval papers):

- recall@k: the share of queries with at least one relevant item in the top k;
- AP@k: the mean over relevant items found in the top k of the precision at
  their rank, divided by min(number of relevant items, k); mAP@k is its mean;
- precision@k: the mean share of relevant items among the top k;
- MRR: the mean of 1 / rank of the first relevant item (0 when none is in the
  top k).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lookalike.errors import LookalikeError

RECALL_AT = (1, 5, 10)


class QueriesFileError(LookalikeError, ValueError):
    """The queries CSV cannot be read; the message says where."""


@dataclass
class EvaluationQuery:
    images: list[Path]  # one new item's photos: one query
    relevant: list[str]
    line: int

    @property
    def image(self) -> Path:
        return self.images[0]

    def describe(self) -> str:
        return "|".join(str(image) for image in self.images)


@dataclass
class QueryOutcome:
    query: str
    relevant: list[str]
    ranked: list[str]
    error: str | None = None

    @property
    def first_rank(self) -> int | None:
        """1-based rank of the first relevant item in ``ranked``, or None."""
        relevant = set(self.relevant)
        return next((rank for rank, item_id in enumerate(self.ranked, 1) if item_id in relevant), None)


@dataclass
class RetrievalEvaluation:
    queries: int
    k: int
    recall: dict[int, float]
    map_at_k: float
    mrr: float
    precision_at_k: float
    outcomes: list[QueryOutcome] = field(repr=False)
    unknown_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def misses(self) -> list[QueryOutcome]:
        """Queries whose first relevant item is not at rank 1, worst first."""
        missed = [outcome for outcome in self.outcomes if outcome.first_rank != 1]
        return sorted(missed, key=lambda outcome: outcome.first_rank or self.k + 1, reverse=True)

    def to_dict(self) -> dict:
        return {
            "queries": self.queries, "k": self.k, "recall": {str(at): value for at, value in self.recall.items()},
            "map_at_k": self.map_at_k, "mrr": self.mrr,
            "precision_at_k": self.precision_at_k, "unknown_ids": self.unknown_ids, "seconds": self.seconds,
            "misses": [{**asdict(outcome), "first_rank": outcome.first_rank} for outcome in self.misses],
        }


def read_queries_csv(path: str | Path) -> list[EvaluationQuery]:
    """Parse a queries CSV; raises QueriesFileError with the line at fault."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise QueriesFileError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
    queries = []
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = {"query_image", "relevant_ids"} - set(reader.fieldnames or ())
    if missing:
        raise QueriesFileError(f"{path}: needs the columns query_image and relevant_ids (missing {', '.join(sorted(missing))})")
    for row in reader:
        images = [image.strip() for image in (row.get("query_image") or "").split("|") if image.strip()]
        relevant = [item_id.strip() for item_id in (row.get("relevant_ids") or "").split("|") if item_id.strip()]
        if not images or not relevant:
            raise QueriesFileError(f"{path}, line {reader.line_num}: a query needs an image and at least one relevant id")
        queries.append(EvaluationQuery([path.parent / image for image in images], relevant, reader.line_num))
    if not queries:
        raise QueriesFileError(f"{path}: no queries")
    return queries


def average_precision(ranked: Sequence[str], relevant: Sequence[str], k: int) -> float:
    wanted = set(relevant)
    found, total = 0, 0.0
    for rank, item_id in enumerate(ranked[:k], 1):
        if item_id in wanted:
            found += 1
            total += found / rank
    return total / min(len(wanted), k) if wanted else 0.0


def summarise(outcomes: Sequence[QueryOutcome], k: int = 10, unknown_ids: Sequence[str] = (),
              seconds: float = 0.0) -> RetrievalEvaluation:
    if not outcomes:
        raise ValueError("no queries to summarise")
    count = len(outcomes)
    ranks = [outcome.first_rank for outcome in outcomes]
    recall = {at: sum(1 for rank in ranks if rank is not None and rank <= at) / count for at in RECALL_AT if at <= k}
    map_at_k = sum(average_precision(o.ranked, o.relevant, k) for o in outcomes) / count
    mrr = sum(1.0 / rank for rank in ranks if rank is not None and rank <= k) / count
    precision = sum(len(set(o.ranked[:k]) & set(o.relevant)) / k for o in outcomes) / count
    return RetrievalEvaluation(count, k, recall, map_at_k, mrr, precision, list(outcomes), sorted(set(unknown_ids)), seconds)
