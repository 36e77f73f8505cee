"""Price estimates: the similarity-weighted median and interval, by hand and through the engine."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from PIL import Image

from lookalike import Engine, Item, ItemFilter
from lookalike.demo import load_cutout, on_white
from lookalike.engine.pricing import PricedNeighbour, estimate_price, weighted_quantile


def test_weighted_quantile_by_hand():
    # weights 1, 1, 2 over values 10, 20, 30: cumulative 1, 2, 4 of 4; the answer is the
    # first value whose cumulative weight reaches the quantile's share of 4
    assert weighted_quantile([30, 10, 20], [2, 1, 1], 0.5) == 20
    assert weighted_quantile([30, 10, 20], [2, 1, 1], 0.6) == 30
    assert weighted_quantile([30, 10, 20], [2, 1, 1], 0.25) == 10
    assert weighted_quantile([30, 10, 20], [2, 1, 1], 0.4) == 20
    assert weighted_quantile([5, 7], [0, 0], 0.5) == 5  # no weight at all: plain quantile


def test_estimate_from_neighbours_by_hand():
    neighbours = [PricedNeighbour("a", 0.9, 100.0), PricedNeighbour("b", 0.8, 200.0), PricedNeighbour("c", 0.5, 1000.0)]
    # weights 0.9^4, 0.8^4, 0.5^4 = .6561, .4096, .0625 of 1.1282: the median falls on 100,
    # the 25th percentile on 100 and the 75th (0.846) on 200.
    estimate = estimate_price(neighbours, "EUR")
    assert (estimate.price, estimate.low, estimate.high) == (100.0, 100.0, 200.0)
    assert estimate.best_score == 0.9 and not estimate.low_confidence and estimate.currency == "EUR"


def test_weak_best_match_is_flagged():
    estimate = estimate_price([PricedNeighbour("a", 0.3, 10.0), PricedNeighbour("b", 0.2, 20.0)])
    assert estimate.low_confidence
    assert estimate_price([]).price is None


@pytest.fixture
def priced_catalog(tmp_path, encoder, stamps):
    engine = Engine(tmp_path / "catalog", encoder=encoder)
    animals = [stamp for stamp in stamps if stamp.subcategory == "mammals"][:6]
    for number, stamp in enumerate(animals):
        engine.add_item(Item(stamp.id, title=stamp.title, category="mammals", price=100.0 * (number + 1), currency="EUR"),
                        on_white(load_cutout(stamp)))
    engine.add_item(Item("unpriced", category="mammals"), on_white(load_cutout(animals[0])))
    return engine, animals


def test_engine_estimate_is_the_weighted_median_of_its_neighbours(priced_catalog):
    engine, animals = priced_catalog
    query = on_white(load_cutout(animals[2]))
    estimate = engine.estimate_price(query, k=4)
    assert len(estimate.neighbours) == 4 and "unpriced" not in {n.id for n in estimate.neighbours}
    assert estimate.neighbours[0].id == animals[2].id and estimate.best_score > 0.99
    weights = [n.score**4 for n in estimate.neighbours]
    prices = [n.price for n in estimate.neighbours]
    assert estimate.price == weighted_quantile(prices, weights, 0.5)
    assert estimate.low <= estimate.price <= estimate.high
    assert estimate.price == 300.0  # its own sale dominates: score 1 against under 0.9 for the others
    assert not estimate.low_confidence


def test_unrelated_photo_gives_a_low_confidence_estimate(priced_catalog):
    engine, _ = priced_catalog
    estimate = engine.estimate_price(Image.fromarray(skimage.data.text()), k=4)
    assert estimate.low_confidence


def test_leave_one_out_evaluation_on_the_demo(demo_engine):
    evaluation = demo_engine.evaluate_price(k=10)
    priced = [item for item in demo_engine.catalog.items(ItemFilter(has_price=True)) if item.price]
    assert evaluation.items == len(priced) >= 400
    # Coverage counted here item by item, each priced from the others.
    inside = []
    for item in priced:
        estimate = demo_engine.estimate_price_by_id(item.id, k=10)
        assert item.id not in {neighbour.id for neighbour in estimate.neighbours}
        inside.append(estimate.low <= item.price <= estimate.high)
    assert evaluation.interval_coverage == pytest.approx(np.mean(inside))
    assert 0.3 <= evaluation.interval_coverage <= 0.7  # a 25th-75th percentile range holds about half
    assert evaluation.mdape < evaluation.mdape_global_median
    assert demo_engine.evaluate_price(k=10, limit=120).items == 120
