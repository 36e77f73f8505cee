"""Leave-one-out over the catalogue: each lot described and priced from the others, to calibrate
when to suggest a field, how wide a price range must be, when to decline, and the price trend.

A calibration is fitted on up to ``SAMPLE`` lots, saved in the catalogue (meta ``calibration``) and
reused until the catalogue's size has moved by more than ``STALE_SHARE`` or the model or levels change.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from lookalike.engine import price_index, pricing, suggest
from lookalike.engine.pricing import PriceCalibration, PricedNeighbour, PriceEstimate
from lookalike.engine.results import SearchHit
from lookalike.engine.suggest import FieldCalibration, FieldCase, Suggestions
from lookalike.store import Item, ItemFilter

if TYPE_CHECKING:
    from lookalike.engine.engine import Engine

#: Similar lots an estimate and a vote look at.
K = 10
SAMPLE = 2000
STALE_SHARE = 0.1
#: An extra field must be filled on this share of lots to be suggested.
MIN_FILLED_SHARE = 0.05
META_KEY = "calibration"


@dataclass
class Neighbourhood:
    """A lot and its nearest lots, itself left out: all of them, and those with a price."""

    item: Item
    neighbours: list[SearchHit]
    priced: list[SearchHit]


def neighbourhoods(engine: Engine, items: Sequence[Item], k: int = K, sold_before: str | None = None,
                   on_progress: Callable[[int], None] | None = None) -> list[Neighbourhood]:
    """Each item's neighbourhood from its stored vectors (``sold_before``: priced lots sold before that date only)."""
    found = []
    for item in items:
        keys = np.asarray([photo.key for photo in item.photos], np.int64)
        if len(keys) == 0:
            continue
        vectors = engine.catalog.vectors_for(keys, engine.model_id)
        neighbours = engine.search_vector(vectors, k, ItemFilter(), keys)
        priced = engine.search_vector(vectors, k, ItemFilter(has_price=True, sold_before=sold_before), keys)
        found.append(Neighbourhood(item, neighbours, priced))
        if on_progress:
            on_progress(1)
    return found


def comparables(hits: Sequence[SearchHit], currency: str | None, index: price_index.PriceIndex | None,
                at: float | None) -> list[PricedNeighbour]:
    """The priced hits in ``currency``, brought to the date ``at`` (years) by the price index when there is one."""
    chosen = []
    for hit in hits:
        if hit.price is None or hit.price <= 0 or hit.currency != currency:
            continue
        adjusted = None
        if index is not None:
            adjusted = hit.price * index.factor(price_index.to_years(hit.sold_at), at)
        chosen.append(PricedNeighbour(hit.id, hit.score, hit.price, hit.title, hit.sold_at, adjusted))
    return chosen


def index_pairs(hoods: Sequence[Neighbourhood]) -> tuple[list[tuple[float, float, float, int]], float | None]:
    pairs, newest = [], None
    for number, hood in enumerate(hoods):
        when = price_index.to_years(hood.item.sold_at)
        if when is None or not hood.item.price or hood.item.price <= 0:
            continue
        newest = when if newest is None else max(newest, when)
        for hit in hood.priced:
            other = price_index.to_years(hit.sold_at)
            if other is not None and hit.price and hit.price > 0 and hit.currency == hood.item.currency:
                pairs.append((float(np.log(hood.item.price / hit.price)), when - other,
                              max(hit.score, 0.0) ** price_index.PAIR_SHARPNESS, number))
    return pairs, newest


def price_cases(hoods: Sequence[Neighbourhood], index: price_index.PriceIndex | None) -> list[pricing.PriceCase]:
    priced = [hood for hood in hoods if hood.item.price and hood.item.price > 0]
    if not priced:
        return []
    baseline = float(np.median([hood.item.price for hood in priced]))
    cases = []
    for hood in priced:
        found = comparables(hood.priced, hood.item.currency, index, price_index.to_years(hood.item.sold_at))
        if len(found) >= pricing.MIN_COMPARABLES:
            cases.append(pricing.PriceCase(hood.item.price, found, baseline))
    return cases


def field_names(items: Sequence[Item]) -> list[str]:
    """The category and every extra field filled on enough lots with more than one value."""
    filled: Counter = Counter()
    values: dict[str, set] = {}
    for item in items:
        for name, value in [("category", item.category), *item.extra.items()]:
            key = suggest.normalise(value)
            if key is not None:
                filled[name] += 1
                values.setdefault(name, set()).add(key)
    return [name for name in ["category", *sorted(set(filled) - {"category"})]
            if filled[name] >= MIN_FILLED_SHARE * len(items) and len(values.get(name, ())) > 1]


def field_cases(hoods: Sequence[Neighbourhood], name: str) -> list[FieldCase]:
    cases = []
    for hood in hoods:
        truth = suggest.normalise(hood.item.category if name == "category" else hood.item.extra.get(name))
        if truth is not None:
            cases.append(FieldCase(truth, suggest.vote(hood.neighbours, name)))
    return cases


def fit_fields(hoods: Sequence[Neighbourhood], target: float) -> dict[str, FieldCalibration]:
    items = [hood.item for hood in hoods]
    fitted = {}
    for name in field_names(items):
        cases = field_cases(hoods, name)
        distinct = len({case.truth for case in cases})
        fitted[name] = suggest.fit_field(cases, distinct, len(cases), target)
    return fitted


@dataclass
class Calibration:
    model_id: str | None
    lots: int
    level: float
    target_accuracy: float
    price: PriceCalibration | None
    index: price_index.PriceIndex | None
    fields: dict[str, FieldCalibration] = field(default_factory=dict)
    sample: int = 0

    def suggest(self, neighbours: Sequence[SearchHit]) -> Suggestions:
        return suggest.suggest(neighbours, self.fields)

    def estimate(self, priced: Sequence[SearchHit], at: float | None) -> PriceEstimate:
        currency = next((hit.currency for hit in priced if hit.price is not None), None)
        return pricing.estimate_price(comparables(priced, currency, self.index, at), currency, self.price, self.level)

    def usable_for(self, model_id: str | None, lots: int, level: float, target: float) -> bool:
        return (self.model_id == model_id and self.level == level and self.target_accuracy == target
                and abs(lots - self.lots) <= STALE_SHARE * max(self.lots, 1))

    def to_json(self) -> str:
        return json.dumps({"model_id": self.model_id, "lots": self.lots, "level": self.level,
                           "target_accuracy": self.target_accuracy, "sample": self.sample,
                           "price": self.price.to_dict() if self.price else None,
                           "index": self.index.to_dict() if self.index else None,
                           "fields": {name: found.to_dict() for name, found in self.fields.items()}})

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        data = json.loads(text)
        return cls(data["model_id"], data["lots"], data["level"], data["target_accuracy"],
                   PriceCalibration.from_dict(data["price"]) if data["price"] else None,
                   price_index.PriceIndex(**data["index"]) if data["index"] else None,
                   {name: FieldCalibration(**found) for name, found in data["fields"].items()}, data.get("sample", 0))


def fit(hoods: Sequence[Neighbourhood], model_id: str | None, lots: int, level: float, target: float,
        time_adjust: bool = True) -> Calibration:
    """A calibration from leave-one-out neighbourhoods (see the module's docstring)."""
    index = None
    if time_adjust:
        pairs, newest = index_pairs(hoods)
        index = price_index.fit_price_index(pairs, newest) if newest is not None else None
    price = pricing.fit_price_calibration(price_cases(hoods, index), level)
    return Calibration(model_id, lots, level, target, price, index, fit_fields(hoods, target), len(hoods))


def sample_items(engine: Engine, limit: int = SAMPLE, seed: int = 0) -> list[Item]:
    items = list(engine.catalog.items())
    if len(items) > limit:
        chosen = np.random.default_rng(seed).choice(len(items), size=limit, replace=False)
        items = [items[i] for i in sorted(chosen)]
    return items


class CalibrationKeeper:
    """The engine's calibration: in memory by catalogue generation, saved in the catalogue, refitted when stale."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.lock = threading.Lock()
        self._current: tuple[int, Calibration] | None = None

    def get(self, refresh: bool = False, on_total: Callable[[int], None] | None = None,
            on_progress: Callable[[int], None] | None = None) -> Calibration:
        engine = self.engine
        settings = engine.settings
        with self.lock:
            generation = engine.catalog.generation
            if not refresh and self._current is not None and self._current[0] == generation:
                return self._current[1]
            lots = engine.catalog.count()
            stored = engine.catalog.get_meta(META_KEY)
            found = None
            if stored and not refresh:
                try:
                    found = Calibration.from_json(stored)
                except (ValueError, KeyError, TypeError):
                    found = None
                if found and not found.usable_for(engine.model_id, lots, settings.price_level, settings.suggest_accuracy):
                    found = None
            if found is None:
                items = sample_items(engine)
                if on_total:
                    on_total(len(items))
                hoods = neighbourhoods(engine, items, on_progress=on_progress)
                found = fit(hoods, engine.model_id, lots, settings.price_level, settings.suggest_accuracy)
                engine.catalog.set_meta(META_KEY, found.to_json())
            self._current = (generation, found)
            return found
