"""The price trend: sale dates read, the index fitted by hand, and older comparables brought to the date priced."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.engine.price_index import PriceIndex, fit_price_index, to_years
from tests.conftest import relisted_demo


def test_sale_dates_read_as_years():
    assert to_years("2024-01-01") == 2024.0
    assert to_years("2024-07-02T10:00:00") == pytest.approx(2024 + 183 / 365.25)
    assert to_years("2024-07") == to_years("2024-07-01")
    assert to_years("2024") == to_years("2024-07-02")  # a bare year: mid-year
    assert to_years("2024-3-5") == to_years("2024-03-05")
    assert to_years("last spring") is None and to_years("") is None and to_years(None) is None
    assert to_years("03-12-2024") is None and to_years("0099") is None and to_years("2024-13-01") is None


def test_index_by_hand():
    # Every pair moved by exactly 0.1 log a year: the weighted slope through the origin is 0.1, with no doubt.
    pairs = [(0.1 * years, years, weight, lot) for lot, (years, weight)
             in enumerate(zip(np.linspace(-3, 3, 41), np.linspace(0.1, 1, 41)))]
    index = fit_price_index(pairs, newest=2025.0)
    assert index.annual_rate == pytest.approx(0.1) and index.standard_error == pytest.approx(0, abs=1e-9)
    assert index.pairs == 40  # the pair 0 years apart says nothing
    assert fit_price_index(pairs[:20], newest=2025.0) is None  # too few pairs: prices are not adjusted
    assert index.factor(2023.0, 2025.0) == pytest.approx(np.exp(0.2))
    assert index.factor(2023.0, 2030.0) == pytest.approx(np.exp(0.3))  # held a year past the newest sale
    assert index.factor(None, 2025.0) == 1.0 and PriceIndex(0.1, 30, 2025.0).factor(2025.0, None) == 1.0


def test_an_uncertain_trend_is_shrunk_towards_none():
    rng = np.random.default_rng(0)
    # Slope 0.05 buried in noise of 0.5 over 40 lots: the estimate is shrunk by 1 - se^2 / rate^2.
    pairs = [(0.05 * years + rng.normal(0, 0.5), years, 1.0, lot % 40)
             for lot, years in enumerate(rng.uniform(-3, 3, 200))]
    index = fit_price_index(pairs, newest=2025.0)
    expected = index.raw_rate * max(0.0, 1 - index.standard_error**2 / index.raw_rate**2)
    assert index.annual_rate == pytest.approx(expected) and abs(index.annual_rate) < abs(index.raw_rate)
    pure_noise = [(rng.normal(0, 0.5), years, 1.0, lot % 40) for lot, years in enumerate(rng.uniform(-3, 3, 200))]
    assert abs(fit_price_index(pure_noise, newest=2025.0).annual_rate) < 0.03


@pytest.fixture(scope="module")
def trending(tmp_path_factory, demo_engine, encoder):
    """The demo's lots sold from 2019 to 2025 while prices rose 20% a year (log)."""
    def reprice(item, rng):
        years = float(rng.uniform(0, 6))
        when = np.datetime64("2019-01-01") + np.timedelta64(int(years * 365.25), "D")
        return round(item.price * float(np.exp(0.2 * years)), 0), str(when)

    return relisted_demo(demo_engine, tmp_path_factory.mktemp("trending"), encoder, reprice)


def test_the_index_finds_the_trend_and_adjusting_helps(trending):
    assert trending.calibration().index.annual_rate == pytest.approx(0.2, abs=0.05)
    rows = {(row["setting"].split(":")[0], row["time_adjusted"]): row for row in trending.evaluate_price().rows}
    loo, split = "leave-one-out", next(name for name, _ in rows if name.startswith("time split"))
    assert set(rows) == {(loo, False), (loo, True), (split, False), (split, True)}
    assert rows[loo, True]["mdape"] < rows[loo, False]["mdape"]
    assert rows[split, True]["mdape"] < rows[split, False]["mdape"]
    assert abs(rows[loo, True]["coverage"] - 0.8) <= 0.03
    assert rows[split, True]["items"] < rows[loo, True]["items"]  # only the later half is priced


def test_an_estimate_shows_each_comparable_brought_to_today(trending):
    item = trending.get_item("plants/flowers/flower3")
    estimate = trending.estimate_price(item.image_path)
    assert estimate.neighbours and all(n.adjusted_price is not None for n in estimate.neighbours)
    oldest = min(estimate.neighbours, key=lambda n: n.sold_at)
    assert oldest.adjusted_price > oldest.price  # rising prices: an old sale is worth more today
