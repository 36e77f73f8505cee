"""Suggested attributes: votes and thresholds by hand, then on the demo and on awkward catalogues."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lookalike.demo import backgrounds, load_cutout, make_phone_photo
from lookalike.engine.results import SearchHit
from lookalike.engine.suggest import FieldCase, Vote, fit_field, normalise, suggest, suggest_title, vote
from tests.conftest import relisted_demo, run_cli


def hit(item_id: str, score: float, category: str | None = None, title: str | None = None, **extra) -> SearchHit:
    return SearchHit(item_id, score, title, category, None, None, None, extra)


def test_values_compare_trimmed_case_folded_and_numbers_one_way():
    assert normalise("1900") == normalise(1900) == normalise(1900.0) == normalise(" 1900 ") == "1900"
    assert normalise("Thonet ") == normalise("thonet") and normalise("Art  Deco") == "art deco"
    assert normalise("") is None and normalise(None) is None and normalise({"a": 1}) is None


def test_vote_by_hand():
    neighbours = [hit("a", 1.0, "chairs"), hit("b", 0.9, "Chairs "), hit("c", 0.8, "tables"), hit("d", 0.7)]
    # weights 1, 0.6561, 0.4096, 0.2401 (d has no category: it votes for nothing) of 2.3058
    found = vote(neighbours, "category")
    assert found.suggestion.value == "chairs" and found.suggestion.support == ["a", "b"]
    assert found.suggestion.share == pytest.approx(1.6561 / 2.3058, abs=1e-4) and found.best_score == 1.0
    assert vote([hit("a", 0.9), hit("b", 0.8)], "maker").suggestion is None


def test_thresholds_are_the_loosest_that_reach_the_target_accuracy():
    # 20 lots whose vote had 90% share, all right; 20 at 40%, half right. Answering all: 75% right; from a 45%
    # share on, only the first 20 are answered, all right: the loosest step that reaches 90% is 0.45.
    cases = [FieldCase("x", Vote(suggestion_of("x", 0.9), 0.8)) for _ in range(20)]
    cases += [FieldCase("x" if n % 2 else "y", Vote(suggestion_of("x", 0.4), 0.8)) for n in range(20)]
    fitted = fit_field(cases, distinct=2, having=40, target=0.9)
    assert fitted.min_share == 0.45 and fitted.answered == 0.5 and fitted.accuracy == 1.0 and fitted.withheld is None
    assert fit_field(cases, distinct=2, having=40, target=0.99).min_share == 0.45
    never = fit_field(cases[20:], distinct=2, having=20, target=0.9)
    assert never.withheld and "never right 90%" in never.withheld
    serials = fit_field(cases, distinct=40, having=40)
    assert serials.withheld and "identifier" in serials.withheld


def suggestion_of(value: str, share: float):
    from lookalike.engine.suggest import Suggestion

    return Suggestion(value, share, ["a"])


def test_suggest_says_why_a_field_is_withheld():
    from lookalike.engine.suggest import FieldCalibration

    calibrations = {"category": FieldCalibration(0.6, 0.5, 100, 0.7, 0.92),
                    "maker": FieldCalibration(0.6, 0.5, 100, 0.7, 0.92),
                    "serial": FieldCalibration(None, None, 100, withheld="an identifier")}
    neighbours = [hit("a", 0.9, "chairs", maker="Thonet"), hit("b", 0.8, "chairs", maker="Kohn"),
                  hit("c", 0.8, "chairs", maker="Fischel")]
    found = suggest(neighbours, calibrations)
    assert found.category.value == "chairs" and "maker" not in found.fields
    assert "disagree" in found.withheld["maker"] and found.withheld["serial"] == "an identifier"
    far = suggest([hit("a", 0.4, "chairs"), hit("b", 0.35, "chairs")], calibrations)
    assert far.category is None and "0.40" in far.withheld["category"]
    body = found.to_dict()
    assert body["category"]["value"] == "chairs" and "maker" not in body["fields"]


def test_title_keeps_the_words_most_similar_lots_share():
    neighbours = [hit("a", 0.9, title="Bentwood chair, No. 14"), hit("b", 0.85, title="Thonet bentwood chair"),
                  hit("c", 0.5, title="Oak table")]
    assert suggest_title(neighbours) == "Bentwood chair"
    assert suggest_title([hit("a", 0.9, title="Vase"), hit("b", 0.9, title="Lamp")]) is None


def test_demo_suggests_the_category_of_a_new_photo(demo_engine, stamps):
    stamp = next(s for s in stamps if s.id == "plants/flowers/flower3")
    photo = make_phone_photo(load_cutout(stamp), backgrounds()[0], np.random.default_rng(3))
    found = demo_engine.suggest(photo)
    assert found.category is not None and found.category.value == "plants" and found.category.share > 0.5
    assert found.category.support[0] == stamp.id


def test_demo_suggestions_beat_the_majority_and_keep_their_accuracy(demo_engine):
    evaluation = demo_engine.evaluate_suggest()
    rows = {row["field"]: row for row in evaluation.fields}
    assert set(rows) == {"category", "subcategory"}  # price_source has one value: nothing to learn
    for row in rows.values():
        assert row["accuracy_always"] > row["accuracy_majority"]
        assert row["accuracy_answered"] >= 0.85 and row["answered_share"] > 0.4


def test_awkward_fields_degrade_to_nothing_to_suggest(tmp_path, demo_engine, encoder):
    def awkward(item, rng):
        return None, None

    engine = relisted_demo(demo_engine, tmp_path / "awkward", encoder, awkward)
    for number, item in enumerate(engine.catalog.items()):
        item.category = None
        item.extra = {"serial": f"S-{number:05d}", "period": ["1900", 1900, "1900.0", "1950"][number % 4],
                      **({"maker": "Acme"} if number % 3 == 0 else {})}
        engine.catalog.write_lots([(item, None)], engine.model_id)
    calibration = engine.calibration(refresh=True)
    assert "category" not in calibration.fields and "maker" not in calibration.fields  # one value: nothing to learn
    assert "identifier" in calibration.fields["serial"].withheld
    assert engine.estimate_price(engine.get_item("plants/flowers/flower3").image_path).declined == \
        "no similar lot in the catalogue has a price"
    found = engine.suggest_by_id("plants/flowers/flower3")
    assert found.category is None and "serial" not in found.fields and "serial" in found.withheld


def test_cli_suggest_and_evaluate_suggest(demo_engine, demo_folder):
    photo = sorted((demo_folder / "photos" / "plants").rglob("*.jpg"))[0]
    found = run_cli("--catalog", str(demo_engine.directory), "suggest", str(photo), "--json")
    assert found.returncode == 0, found.stderr
    body = json.loads(found.stdout)["suggestions"]
    assert body["category"]["value"] == "plants" and 0 < body["category"]["share"] <= 1 and body["category"]["support"]
    table = run_cli("--catalog", str(demo_engine.directory), "evaluate-suggest", "--quiet")
    assert table.returncode == 0 and "category" in table.stdout and "majority" in table.stdout
    missing = run_cli("--catalog", str(demo_engine.directory), "suggest", "/nonexistent.jpg")
    assert missing.returncode != 0 and missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
