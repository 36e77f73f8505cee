"""Price estimates: the weighted median, calibrated ranges and declining, by hand and on real catalogues."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from PIL import Image

from lookalike import Engine, Item
from lookalike.demo import load_cutout, on_white
from lookalike.engine.pricing import (
    PriceBand,
    PriceCalibration,
    PriceCase,
    PricedNeighbour,
    _conformal,
    estimate_price,
    fit_price_calibration,
    weighted_quantile,
)
from tests.conftest import relisted_demo


def test_weighted_quantile_by_hand():
    # weights 1, 1, 2 over values 10, 20, 30: cumulative 1, 2, 4 of 4; the answer is the
    # first value whose cumulative weight reaches the quantile's share of 4
    assert weighted_quantile([30, 10, 20], [2, 1, 1], 0.5) == 20
    assert weighted_quantile([30, 10, 20], [2, 1, 1], 0.6) == 30
    assert weighted_quantile([30, 10, 20], [2, 1, 1], 0.25) == 10
    assert weighted_quantile([30, 10, 20], [2, 1, 1], 0.4) == 20
    assert weighted_quantile([5, 7], [0, 0], 0.5) == 5  # no weight at all: plain quantile


def three_neighbours() -> list[PricedNeighbour]:
    return [PricedNeighbour("a", 0.9, 100.0), PricedNeighbour("b", 0.8, 200.0), PricedNeighbour("c", 0.5, 1000.0)]


def test_uncalibrated_estimate_by_hand():
    # weights 0.9^4, 0.8^4, 0.5^4 = .6561, .4096, .0625 of 1.1282: the median falls on 100; an 80% range runs
    # from the 10th percentile (100) to the 90th (cumulative 1.0154 of 1.1282: 200).
    estimate = estimate_price(three_neighbours(), "EUR")
    assert (estimate.price, estimate.low, estimate.high) == pytest.approx((100.0, 100.0, 200.0))
    assert not estimate.calibrated and "not calibrated" in estimate.meaning and estimate.declined is None


def test_calibrated_range_by_hand():
    # All three at 100: the neighbours agree (spread 0), so the scale is the band's typical error, 0.5;
    # the range is 100 * exp(-1 * 0.5) to 100 * exp(2 * 0.5).
    calibration = PriceCalibration(0.8, 0.3, [PriceBand(-1.0, -1.0, 2.0, 0.5, 100)], 100)
    neighbours = [PricedNeighbour(name, 0.9, 100.0) for name in "abc"]
    estimate = estimate_price(neighbours, "EUR", calibration)
    assert estimate.price == pytest.approx(100.0)
    assert (estimate.low, estimate.high) == pytest.approx((100 * np.exp(-0.5), 100 * np.exp(1.0)))
    assert estimate.calibrated and estimate.level == 0.8 and "80%" in estimate.meaning


def test_declines_when_too_few_or_too_far():
    two = estimate_price(three_neighbours()[:2])
    assert two.price is None and "not enough similar sold lots" in two.declined and two.low_confidence
    far = estimate_price(three_neighbours(), calibration=PriceCalibration(0.8, 0.95, [PriceBand(-1.0, -1.0, 1.0, 0.3, 50)], 50))
    assert far.price is None and "0.90" in far.declined and "0.95" in far.declined
    assert estimate_price([]).declined == "no similar lot in the catalogue has a price"


def test_conformal_quantiles_by_hand():
    # Nine scores, 80%: each tail 10%; the upper is the ceil(10 * 0.9) = 9th smallest, the lower the floor(10 * 0.1) = 1st.
    assert _conformal(np.arange(1.0, 10.0), 0.8) == (1.0, 9.0)
    # 99 scores: the 90th and the 10th smallest, so at most 9 of 99 fall out on each side.
    assert _conformal(np.arange(99.0, 0.0, -1.0), 0.8) == (10.0, 90.0)


def _cases(rng, count, informative: bool) -> list[PriceCase]:
    """Lots each priced from three similar lots: near its price (informative) or anywhere (not)."""
    cases = []
    for _ in range(count):
        truth = rng.normal(5, 1)
        guess = truth + rng.normal(0, 0.3) if informative else rng.normal(5, 1)
        neighbours = [PricedNeighbour(str(n), float(rng.uniform(0.5, 1)), float(np.exp(guess + rng.normal(0, 0.2))))
                      for n in range(3)]
        cases.append(PriceCase(float(np.exp(truth)), neighbours, float(np.exp(5))))
    return cases


def test_ranges_hold_their_level_on_fresh_cases():
    rng = np.random.default_rng(0)
    calibration = fit_price_calibration(_cases(rng, 2000, True), 0.8)
    assert calibration.decline_all is None
    inside = []
    for case in _cases(rng, 4000, True):
        estimate = estimate_price(case.neighbours, calibration=calibration)
        inside.append(estimate.low <= case.price <= estimate.high)
    assert abs(np.mean(inside) - 0.8) <= 0.03


def test_uninformative_neighbours_decline_everything():
    calibration = fit_price_calibration(_cases(np.random.default_rng(1), 600, False), 0.8)
    assert calibration.decline_all and "not better than" in calibration.decline_all
    estimate = estimate_price([PricedNeighbour(name, 0.99, 100.0) for name in "abc"], calibration=calibration)
    assert estimate.price is None and estimate.declined == calibration.decline_all


def test_too_few_cases_leave_the_range_uncalibrated():
    assert fit_price_calibration(_cases(np.random.default_rng(2), 20, True)) is None
    with pytest.raises(ValueError):
        fit_price_calibration(_cases(np.random.default_rng(2), 50, True), 0.3)


@pytest.fixture
def priced_catalog(tmp_path, encoder, stamps):
    engine = Engine(tmp_path / "catalog", encoder=encoder)
    animals = [stamp for stamp in stamps if stamp.subcategory == "mammals"][:6]
    for number, stamp in enumerate(animals):
        engine.add_item(Item(stamp.id, title=stamp.title, category="mammals", price=100.0 * (number + 1), currency="EUR"),
                        on_white(load_cutout(stamp)))
    engine.add_item(Item("unpriced", category="mammals"), on_white(load_cutout(animals[0])))
    return engine, animals


def test_small_catalogue_estimate_is_the_weighted_median_uncalibrated(priced_catalog):
    engine, animals = priced_catalog
    estimate = engine.estimate_price(on_white(load_cutout(animals[2])), k=4)
    assert len(estimate.neighbours) == 4 and "unpriced" not in {n.id for n in estimate.neighbours}
    assert estimate.neighbours[0].id == animals[2].id and estimate.best_score > 0.99
    weights = [n.score**4 for n in estimate.neighbours]
    assert estimate.price == pytest.approx(weighted_quantile([n.price for n in estimate.neighbours], weights, 0.5))
    assert estimate.price == pytest.approx(300.0)  # its own sale dominates: score 1 against under 0.9 for the others
    assert estimate.low <= estimate.price <= estimate.high and not estimate.calibrated


def test_demo_ranges_hold_their_level_leave_one_out(demo_engine):
    evaluation = demo_engine.evaluate_price()
    row = evaluation.rows[0]
    assert row["setting"] == "leave-one-out" and row["items"] >= 400 and not row["time_adjusted"]
    assert abs(row["coverage"] - 0.8) <= 0.03
    assert row["mdape"] < row["mdape_global_median"]
    assert 0 < row["declined_share"] < 0.5 and row["mdape"] <= row["mdape_never_declining"]
    assert len(evaluation.rows) == 1  # the demo's lots have no sale dates: no time rows


def test_demo_declines_a_photo_unlike_any_lot(demo_engine):
    calibration = demo_engine.calibration()
    assert calibration.price is not None and calibration.price.decline_below > 0.3
    estimates = [demo_engine.estimate_price(Image.fromarray(photo))
                 for photo in (skimage.data.coins(), skimage.data.text(), skimage.data.camera())]
    farthest = min(estimates, key=lambda estimate: estimate.best_score)
    assert farthest.best_score < calibration.price.decline_below
    assert farthest.price is None and "not enough similar sold lots" in farthest.declined


def test_pure_noise_prices_are_declined_or_given_wide_ranges(tmp_path, demo_engine, encoder):
    noise = relisted_demo(demo_engine, tmp_path / "noise", encoder,
                          lambda item, rng: (round(float(np.exp(rng.normal(4.5, 0.8))), 0), None))
    row = noise.evaluate_price().rows[0]
    demo = demo_engine.evaluate_price().rows[0]
    assert row["declined_share"] >= 0.8 or (abs(row["coverage"] - 0.8) <= 0.03 and row["mean_width"] > demo["mean_width"])


def test_an_estimate_never_mixes_currencies():
    from lookalike.engine.calibration import Calibration, main_currency
    from lookalike.engine.results import SearchHit

    def sold(item_id, score, price, currency):
        return SearchHit(item_id, score, None, None, price, currency, None, {})

    hits = [sold("a", 0.9, 100.0, None), sold("b", 0.8, 200.0, "EUR"), sold("c", 0.8, 220.0, "EUR"),
            sold("d", 0.7, 210.0, "EUR"), sold("e", 0.95, 5000.0, "JPY")]
    # weights: None .66, JPY .81, EUR .41 + .41 + .24 = 1.06: most of the weight is in euros
    assert main_currency(hits) == "EUR"
    estimate = Calibration(None, 5, 0.8, 0.9, None, None).estimate(hits, None)
    assert estimate.currency == "EUR" and {n.id for n in estimate.neighbours} == {"b", "c", "d"}
    assert estimate.price == pytest.approx(210.0)


def test_a_filtered_search_does_not_claim_the_calibrated_share(demo_engine, stamps):
    from lookalike import ItemFilter

    stamp = next(s for s in stamps if s.id == "plants/flowers/flower3")
    photo = on_white(load_cutout(stamp))
    assert demo_engine.estimate_price(photo).calibrated
    filtered = demo_engine.estimate_price(photo, item_filter=ItemFilter(category="plants"))
    assert filtered.price is not None and not filtered.calibrated and "not measured" in filtered.meaning
