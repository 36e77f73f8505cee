"""Price estimates from similar sold items.

The estimate is the similarity-weighted median of the neighbours' prices and
the interval their weighted 25th-75th percentiles. A neighbour's weight is
its cosine similarity raised to ``SHARPNESS`` so that close matches dominate
(measured with ``lookalike evaluate-price``). When even the best match is
weak the estimate is flagged as low-confidence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

SHARPNESS = 4.0
LOW_CONFIDENCE_SCORE = 0.55
INTERVAL = (0.25, 0.75)


@dataclass
class PricedNeighbour:
    id: str
    score: float
    price: float
    title: str | None = None


@dataclass
class PriceEstimate:
    price: float | None
    low: float | None
    high: float | None
    currency: str | None
    low_confidence: bool
    best_score: float | None
    neighbours: list[PricedNeighbour] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def weighted_quantile(values, weights, quantile: float) -> float:
    """The smallest value whose cumulative weight reaches ``quantile`` of the total."""
    values = np.asarray(values, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if len(values) == 0:
        raise ValueError("no values")
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    total = weights.sum()
    if total <= 0:
        weights, total = np.ones_like(values), float(len(values))
    cumulative = np.cumsum(weights)
    position = int(np.searchsorted(cumulative, quantile * total - 1e-12 * total, side="left"))
    return float(values[min(position, len(values) - 1)])


def estimate_price(neighbours: list[PricedNeighbour], currency: str | None = None,
                   sharpness: float = SHARPNESS, low_confidence_score: float = LOW_CONFIDENCE_SCORE) -> PriceEstimate:
    if not neighbours:
        return PriceEstimate(None, None, None, currency, True, None, [])
    prices = [neighbour.price for neighbour in neighbours]
    weights = [max(neighbour.score, 0.0) ** sharpness for neighbour in neighbours]
    best = max(neighbour.score for neighbour in neighbours)
    return PriceEstimate(
        price=weighted_quantile(prices, weights, 0.5),
        low=weighted_quantile(prices, weights, INTERVAL[0]),
        high=weighted_quantile(prices, weights, INTERVAL[1]),
        currency=currency,
        low_confidence=best < low_confidence_score,
        best_score=best,
        neighbours=neighbours,
    )


def absolute_percentage_error(estimate: float, actual: float) -> float:
    return abs(estimate - actual) / abs(actual)
