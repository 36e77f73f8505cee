"""What a search answers: hits with their metadata, and the timing."""

from __future__ import annotations

from dataclasses import dataclass

from lookalike.engine.pricing import PriceEstimate
from lookalike.engine.suggest import Suggestions
from lookalike.matching import Verification


@dataclass
class SearchHit:
    id: str
    score: float
    title: str | None
    category: str | None
    price: float | None
    currency: str | None
    image_path: str | None
    extra: dict
    #: Which of the lot's photos matched best (0 = its main photo), and how many it has.
    matched_photo: int = 0
    photo_count: int = 1
    #: For a query of several photos: which of them matched this lot best.
    matched_query: int | None = None
    sold_at: str | None = None
    #: Set when the hit was checked with local features (engine/verification.py).
    verification: Verification | None = None
    #: Which query photo the verification's evidence comes from (for "more like this", which photo of the lot).
    verified_query: int | None = None
    same_object: bool | None = None
    rank_score: float | None = None

    @property
    def ranking(self) -> float:
        """What results are ordered by: the score with the lot's second photo's share and, when verified, the
        inliers' (engine/lots.py, engine/verification.py)."""
        return self.score if self.rank_score is None else self.rank_score

    @property
    def inliers(self) -> int | None:
        return None if self.verification is None else self.verification.inliers

    def to_dict(self, with_match: bool = False) -> dict:
        body = {"id": self.id, "score": round(self.score, 4), "title": self.title, "category": self.category,
                "price": self.price, "currency": self.currency, "image_path": self.image_path, "extra": self.extra,
                "matched_photo": self.matched_photo, "photo_count": self.photo_count, "sold_at": self.sold_at}
        if self.matched_query is not None:
            body["matched_query"] = self.matched_query
        body["rank_score"] = round(self.ranking, 4)
        if self.verification is not None:
            body.update(inliers=self.inliers, same_object=self.same_object)
            if with_match:
                body["match"] = {**self.verification.to_dict(), "query_photo": self.verified_query}
        return body


@dataclass
class SearchResult:
    query: str
    hits: list[SearchHit]
    took_ms: float
    embed_ms: float = 0.0
    estimate: PriceEstimate | None = None
    suggestions: Suggestions | None = None

    def to_dict(self, with_match: bool = False) -> dict:
        """``with_match`` adds each verified hit's matched point pairs and region (for drawing why it matched)."""
        body = {"query": self.query, "results": [hit.to_dict(with_match) for hit in self.hits],
                "took_ms": round(self.took_ms, 1)}
        if self.estimate is not None:
            body["estimate"] = self.estimate.to_dict()
        if self.suggestions is not None:
            body["suggestions"] = self.suggestions.to_dict()
        return body
