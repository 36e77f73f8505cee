"""What a search answers: hits with their metadata, and the timing."""

from __future__ import annotations

from dataclasses import dataclass

from lookalike.engine.pricing import PriceEstimate


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

    def to_dict(self) -> dict:
        body = {"id": self.id, "score": round(self.score, 4), "title": self.title, "category": self.category,
                "price": self.price, "currency": self.currency, "image_path": self.image_path, "extra": self.extra,
                "matched_photo": self.matched_photo, "photo_count": self.photo_count}
        if self.matched_query is not None:
            body["matched_query"] = self.matched_query
        return body


@dataclass
class SearchResult:
    query: str
    hits: list[SearchHit]
    took_ms: float
    embed_ms: float = 0.0
    estimate: PriceEstimate | None = None

    def to_dict(self) -> dict:
        body = {"query": self.query, "results": [hit.to_dict() for hit in self.hits], "took_ms": round(self.took_ms, 1)}
        if self.estimate is not None:
            body["estimate"] = self.estimate.to_dict()
        return body
