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

    def to_dict(self) -> dict:
        return {"id": self.id, "score": round(self.score, 4), "title": self.title, "category": self.category,
                "price": self.price, "currency": self.currency, "image_path": self.image_path, "extra": self.extra}


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
