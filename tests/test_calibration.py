"""The calibration kept with the catalogue: saved and reused, refitted in the background once the catalogue has
moved by a tenth, fitted again for another level."""

from __future__ import annotations

import numpy as np

from lookalike import Engine, Item
from lookalike.engine.calibration import META_KEY
from tests.conftest import relisted_demo


def test_saved_reused_and_refitted_in_the_background(tmp_path, demo_engine, encoder):
    engine = relisted_demo(demo_engine, tmp_path / "catalog", encoder, lambda item, rng: (item.price, None))
    first = engine.calibration()
    assert first.lots == 439 and engine.catalog.get_meta(META_KEY)
    engine.close()

    reopened = Engine(tmp_path / "catalog", encoder=encoder)
    assert reopened.calibration().to_json() == first.to_json()  # read back, not fitted again
    vector = demo_engine.catalog.vectors_for(np.array([demo_engine.get_item("plants/flowers/flower3").photos[0].key]),
                                             demo_engine.model_id)
    reopened.add_vectors([Item(f"copy-{n}", price=10.0, currency="EUR") for n in range(20)], np.repeat(vector, 20, 0))
    assert reopened.calibration().lots == 439  # 20 more lots: within a tenth, still fresh
    reopened.add_vectors([Item(f"more-{n}", price=10.0, currency="EUR") for n in range(40)], np.repeat(vector, 40, 0))
    stale = reopened.calibration()
    assert stale.lots == 439  # answered at once by the last calibration while the new one is fitted
    refit = reopened.calibrations._refitting
    if refit is not None:
        refit.join(timeout=120)
    assert reopened.calibration().lots == 499 and Engine(tmp_path / "catalog", encoder=encoder).calibration().lots == 499


def test_another_level_is_fitted_for_itself(tmp_path, demo_engine, encoder):
    engine = relisted_demo(demo_engine, tmp_path / "catalog", encoder, lambda item, rng: (item.price, None))
    assert engine.calibration().level == 0.8
    wider = Engine(tmp_path / "catalog", encoder=encoder, price_level=0.9)
    calibration = wider.calibration()
    assert calibration.level == 0.9 and calibration.price.bands[0].q_high > engine.calibration().price.bands[0].q_high
