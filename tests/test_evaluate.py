"""`lookalike evaluate`: retrieval metrics on a hand-made set, checked against
figures computed by hand, through the metric functions and the real CLI."""

from __future__ import annotations

import json

import pytest

from lookalike.engine.evaluation import QueriesFileError, QueryOutcome, average_precision, read_queries_csv, summarise
from tests.conftest import run_cli


def test_metrics_by_hand():
    outcomes = [
        QueryOutcome("q1", ["a"], ["a", "b", "c"]),          # first relevant at 1: AP 1, RR 1
        QueryOutcome("q2", ["c"], ["a", "b", "c"]),          # at 3: AP 1/3, RR 1/3
        QueryOutcome("q3", ["b", "d"], ["b", "x", "d"]),     # at 1 and 3: AP (1/1 + 2/3) / 2 = 5/6, RR 1
        QueryOutcome("q4", ["z"], ["a", "b", "c"]),          # never: AP 0, RR 0
    ]
    evaluation = summarise(outcomes, k=10)
    assert evaluation.recall == {1: 0.5, 5: 0.75, 10: 0.75}
    assert evaluation.map_at_k == pytest.approx((1 + 1 / 3 + 5 / 6 + 0) / 4)
    assert evaluation.mrr == pytest.approx((1 + 1 / 3 + 1 + 0) / 4)
    assert evaluation.precision_at_k == pytest.approx((1 + 1 + 2 + 0) / 10 / 4)
    assert [outcome.query for outcome in evaluation.misses] == ["q4", "q2"]  # worst first
    assert summarise(outcomes, k=2).recall == {1: 0.5}  # recall@5/10 are not claimed when only 2 ranks are scored


def test_average_precision_is_capped_at_k():
    ranked = [f"i{n}" for n in range(20)]
    assert average_precision(ranked, ranked[:15], k=10) == pytest.approx(1.0)  # 10 of min(15, 10) found
    assert average_precision(ranked, ["i1"], k=1) == 0.0


def test_queries_file_errors(tmp_path):
    (tmp_path / "wrong.csv").write_text("image,ids\na.jpg,x\n")
    (tmp_path / "blank.csv").write_text("query_image,relevant_ids\na.jpg,x\nb.jpg,\n")
    with pytest.raises(QueriesFileError, match="needs the columns"):
        read_queries_csv(tmp_path / "wrong.csv")
    with pytest.raises(QueriesFileError, match="line 3"):
        read_queries_csv(tmp_path / "blank.csv")
    with pytest.raises(QueriesFileError, match="cannot read"):
        read_queries_csv(tmp_path / "absent.csv")


@pytest.fixture(scope="module")
def two_item_catalog(tmp_path_factory, demo_folder):
    """A catalogue of two real photos; with k=10 every query ranks both, so every figure is known."""
    folder = tmp_path_factory.mktemp("evaluate")
    photos = sorted((demo_folder / "photos" / "animals").rglob("*.jpg"))[:2]
    (folder / "catalogue.csv").write_text(f"id,image,title\nA,{photos[0]},first\nB,{photos[1]},second\n")
    catalog = folder / "catalog"
    indexed = run_cli("--catalog", str(catalog), "index", "--metadata", str(folder / "catalogue.csv"), "--quiet")
    assert indexed.returncode == 0, indexed.stderr
    (folder / "queries").mkdir()
    (folder / "queries" / "a.jpg").write_bytes(photos[0].read_bytes())
    (folder / "queries" / "b.jpg").write_bytes(photos[1].read_bytes())
    (folder / "queries" / "not an image.jpg").write_text("text")
    return folder, catalog


def test_evaluate_cli_on_hand_made_set(two_item_catalog):
    folder, catalog = two_item_catalog
    # Query photos are the catalogue photos themselves, so each finds its own item first and the other second.
    (folder / "queries.csv").write_text(
        "query_image,relevant_ids\n"
        "queries/a.jpg,A\n"                   # rank 1: AP 1, RR 1
        "queries/a.jpg,B\n"                   # rank 2: AP 1/2, RR 1/2
        "queries/b.jpg,A|B\n"                 # ranks 1, 2: AP 1, RR 1
        "queries/b.jpg,GHOST\n"               # not in the catalogue: AP 0, RR 0
        "queries/not an image.jpg,A\n"        # unreadable: a miss, reported
    )
    result = run_cli("--catalog", str(catalog), "--query-mode", "single", "evaluate", str(folder / "queries.csv"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["queries"] == 5
    assert report["recall"] == {"1": pytest.approx(2 / 5), "5": pytest.approx(3 / 5), "10": pytest.approx(3 / 5)}
    assert report["map_at_k"] == pytest.approx((1 + 0.5 + 1 + 0 + 0) / 5)
    assert report["mrr"] == pytest.approx((1 + 0.5 + 1 + 0 + 0) / 5)
    assert report["precision_at_k"] == pytest.approx((1 + 1 + 2 + 0 + 0) / 10 / 5)
    assert report["unknown_ids"] == ["GHOST"]
    misses = {(miss["query"].rsplit("/", 1)[-1], miss["first_rank"]) for miss in report["misses"]}
    assert misses == {("a.jpg", 2), ("b.jpg", None), ("not an image.jpg", None)}
    assert any(miss["error"] for miss in report["misses"])

    table = run_cli("--catalog", str(catalog), "evaluate", str(folder / "queries.csv"), "--quiet")
    assert table.returncode == 0, table.stderr
    assert "recall@1   0.400" in table.stdout and "mAP@10" in table.stdout
    assert "GHOST" in table.stdout and "not an image.jpg" in table.stdout


def test_evaluate_cli_bad_queries_file_is_one_line(two_item_catalog, tmp_path):
    _, catalog = two_item_catalog
    (tmp_path / "queries.csv").write_text("photo,ids\n")
    result = run_cli("--catalog", str(catalog), "evaluate", str(tmp_path / "queries.csv"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "query_image" in result.stderr
