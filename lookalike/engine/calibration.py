"""Leave-one-out over the catalogue: each lot described and priced from the others, to calibrate
when to suggest a field, how wide a price range must be, when to decline, and the price trend.

A calibration is fitted on up to ``SAMPLE`` lots, saved in the catalogue (meta ``calibration``) and
reused until the catalogue's size has moved by more than ``STALE_SHARE`` or the model or levels change.
"""

from __future__ import annotations

import json
import logging
import sqlite3
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
from lookalike.errors import LookalikeError
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
#: Bumped when what a calibration holds or means changes: an older saved one is refitted.
VERSION = 1


@dataclass
class Neighbourhood:
    """A lot and its nearest lots, itself left out: all of them, and those with a price."""

    item: Item
    neighbours: list[SearchHit]
    priced: list[SearchHit]


def neighbourhoods(engine: Engine, items: Sequence[Item], k: int = K, sold_before: str | None = None,
                   on_progress: Callable[[int], None] | None = None) -> list[Neighbourhood]:
    """Each item's neighbourhood from its stored vectors (``sold_before``: priced lots sold before that date only);
    a lot with a photo that has no vector (not embedded yet) is left out."""
    found = []
    cutoff = price_index.to_years(sold_before) if sold_before else None
    for item in items:
        keys = np.asarray([photo.key for photo in item.photos], np.int64)
        try:
            vectors = engine.catalog.vectors_for(keys, engine.model_id) if len(keys) else None
        except KeyError:
            vectors = None
        if vectors is None:
            if on_progress:
                on_progress(1)
            continue
        neighbours = engine.search_vector(vectors, k, ItemFilter(), keys)
        priced = engine.search_vector(vectors, k, ItemFilter(has_price=True, sold_before=sold_before), keys)
        if cutoff is not None:  # the filter compares dates as text: keep only what is surely earlier
            priced = [hit for hit in priced if (price_index.to_years(hit.sold_at) or cutoff) < cutoff]
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


def main_currency(hits: Sequence[SearchHit]) -> str | None:
    """The currency most of the similar sold lots' weight is in (an estimate never mixes currencies)."""
    weights: dict[str | None, float] = {}
    for hit in hits:
        if hit.price is not None and hit.price > 0:
            weights[hit.currency] = weights.get(hit.currency, 0.0) + max(hit.score, 0.0) ** pricing.SHARPNESS
    return max(weights, key=weights.__getitem__) if weights else None


def index_pairs(hoods: Sequence[Neighbourhood], within: set[str] | None = None
                ) -> tuple[list[tuple[float, float, float, int]], float | None]:
    """Pairs of dated sales for the price index; ``within``: only pairs of these lots (a calibration judged on
    other lots must not learn the trend from their prices)."""
    pairs, newest = [], None
    for number, hood in enumerate(hoods):
        when = price_index.to_years(hood.item.sold_at)
        if when is None or not hood.item.price or hood.item.price <= 0:
            continue
        newest = when if newest is None else max(newest, when)
        for hit in hood.priced:
            if within is not None and hit.id not in within:
                continue
            other = price_index.to_years(hit.sold_at)
            if other is not None and hit.price and hit.price > 0 and hit.currency == hood.item.currency:
                pairs.append((float(np.log(hood.item.price / hit.price)), when - other,
                              max(hit.score, 0.0) ** price_index.PAIR_SHARPNESS, number))
    return pairs, newest


def price_cases(hoods: Sequence[Neighbourhood], index: price_index.PriceIndex | None) -> list[pricing.PriceCase]:
    """Each sold lot with the comparables it is priced from, and the median price of the other lots in its currency."""
    priced = [hood for hood in hoods if hood.item.price and hood.item.price > 0]
    by_currency: dict[str | None, list[float]] = {}
    for hood in priced:
        by_currency.setdefault(hood.item.currency, []).append(hood.item.price)
    ordered = {currency: np.sort(prices) for currency, prices in by_currency.items()}
    cases = []
    for hood in priced:
        others = ordered[hood.item.currency]
        if len(others) < 2:
            continue
        at = int(np.searchsorted(others, hood.item.price))
        baseline = float(np.median(np.delete(others, at)))
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
    return list(field_cases_by_lot(hoods, name).values())


def field_cases_by_lot(hoods: Sequence[Neighbourhood], name: str) -> dict[str, FieldCase]:
    """Lot id -> its field ``name`` voted on by its neighbours, for the lots that have the field."""
    cases = {}
    for hood in hoods:
        truth = suggest.normalise(suggest.field_value(hood.item, name))
        if truth is not None:
            cases[hood.item.id] = FieldCase(truth, suggest.vote(hood.neighbours, name))
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
    version: int = 0

    def suggest(self, neighbours: Sequence[SearchHit]) -> Suggestions:
        return suggest.suggest(neighbours, self.fields)

    def estimate(self, priced: Sequence[SearchHit], at: float | None, currency: str | None = None,
                 as_calibrated: bool = True) -> PriceEstimate:
        """The estimate from ``priced`` hits in ``currency`` (default: the one most of their weight is in).
        ``as_calibrated=False``: the search differs from the one calibrated (other k, a filter, a text query), so
        the range's share is not claimed."""
        currency = currency if currency is not None else main_currency(priced)
        estimate = pricing.estimate_price(comparables(priced, currency, self.index, at), currency, self.price, self.level)
        if estimate.calibrated and not as_calibrated:
            estimate.calibrated = False
            estimate.meaning = (f"{self.level:.0%} range as calibrated for a photo search of the {K} most similar lots "
                                "without filters; for this search how often it holds is not measured")
        return estimate

    def matches(self, model_id: str | None, level: float, target: float) -> bool:
        return (self.version == VERSION and self.model_id == model_id and self.level == level
                and self.target_accuracy == target)

    def fresh_for(self, lots: int) -> bool:
        return abs(lots - self.lots) <= STALE_SHARE * max(self.lots, 1)

    def to_json(self) -> str:
        return json.dumps({"version": self.version, "model_id": self.model_id, "lots": self.lots, "level": self.level,
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
                   {name: FieldCalibration(**found) for name, found in data["fields"].items()}, data.get("sample", 0),
                   data.get("version", 0))


def fit(hoods: Sequence[Neighbourhood], model_id: str | None, lots: int, level: float, target: float,
        time_adjust: bool = True, held_out: bool = False) -> Calibration:
    """A calibration from leave-one-out neighbourhoods (see the module's docstring). ``held_out``: it will be
    judged on other lots, so the price trend is learnt from pairs among these lots only."""
    index = None
    if time_adjust:
        pairs, newest = index_pairs(hoods, {hood.item.id for hood in hoods} if held_out else None)
        index = price_index.fit_price_index(pairs, newest) if newest is not None else None
    price = pricing.fit_price_calibration(price_cases(hoods, index), level)
    return Calibration(model_id, lots, level, target, price, index, fit_fields(hoods, target), len(hoods), VERSION)


def sample_items(engine: Engine, limit: int = SAMPLE, seed: int = 0) -> list[Item]:
    items = list(engine.catalog.items())
    if len(items) > limit:
        chosen = np.random.default_rng(seed).choice(len(items), size=limit, replace=False)
        items = [items[i] for i in sorted(chosen)]
    return items


class CalibrationKeeper:
    """The engine's calibration: in memory by catalogue generation, saved in the catalogue. Fitted on first use;
    once the catalogue has grown or shrunk by a tenth, refitted in the background while the last one serves."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.lock = threading.Lock()
        self._current: tuple[int, Calibration] | None = None
        self._refitting: threading.Thread | None = None

    def get(self, refresh: bool = False, on_total: Callable[[int], None] | None = None,
            on_progress: Callable[[int], None] | None = None) -> Calibration:
        engine = self.engine
        with self.lock:
            generation = engine.catalog.generation
            if not refresh and self._current is not None and self._current[0] == generation:
                return self._current[1]
            found = None if refresh else self._stored()
            if found is None:
                found = self._fit(on_total, on_progress)
            elif not found.fresh_for(engine.catalog.count()) and self._refitting is None:
                self._refitting = threading.Thread(target=self._refit, daemon=True, name="recalibration")
                self._refitting.start()
            self._current = (generation, found)
            return found

    def _stored(self) -> Calibration | None:
        engine, settings = self.engine, self.engine.settings
        try:
            found = Calibration.from_json(engine.catalog.get_meta(META_KEY) or "")
        except (ValueError, KeyError, TypeError):
            return None
        return found if found.matches(engine.model_id, settings.price_level, settings.suggest_accuracy) else None

    def _fit(self, on_total: Callable[[int], None] | None = None,
             on_progress: Callable[[int], None] | None = None) -> Calibration:
        engine, settings = self.engine, self.engine.settings
        lots = engine.catalog.count()
        items = sample_items(engine)
        if on_total:
            on_total(len(items))
        hoods = neighbourhoods(engine, items, on_progress=on_progress)
        found = fit(hoods, engine.model_id, lots, settings.price_level, settings.suggest_accuracy)
        try:
            engine.catalog.set_meta(META_KEY, found.to_json())
        except (sqlite3.Error, LookalikeError, OSError) as error:  # a read-only catalogue still answers; it refits next time
            logging.getLogger(__name__).warning("could not save the calibration: %s", error)
        return found

    def _refit(self) -> None:
        try:
            found = self._fit()
            with self.lock:
                self._current = (self.engine.catalog.generation, found)
        except Exception:  # noqa: BLE001 - the last calibration keeps serving
            logging.getLogger(__name__).exception("recalibration failed")
        finally:
            self._refitting = None
