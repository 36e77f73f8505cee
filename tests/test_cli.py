"""The real `lookalike` command on fixture folders: odd formats, unicode names,
empty folders, files that are not images, and its error messages."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory, demo_folder):
    """Real photos saved in many formats and under awkward names, plus junk."""
    folder = tmp_path_factory.mktemp("odd photos")
    sources = sorted((demo_folder / "photos" / "vehicles").rglob("*.jpg"))[:8]
    images = [Image.open(path).convert("RGB") for path in sources]
    (folder / "ünïcödé ñame").mkdir()
    images[0].save(folder / "ünïcödé ñame" / "été à la plage.jpg")
    images[1].convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(np.asarray(images[2].convert("L"), np.uint16) * 257).save(folder / "sixteen bit.png")
    images[3].convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.gif")
    images[4].save(folder / "photo.webp")
    images[5].save(folder / "scan.tiff")
    images[6].save(folder / "png named.jpg", "PNG")  # wrong extension, still an image
    images[7].save(folder / "日本語.bmp")
    (folder / "empty folder").mkdir()
    (folder / "readme.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder / "zero.png").write_bytes(b"")
    return folder, sources


def test_index_odd_folder_then_search_and_rerun(tmp_path, odd_folder):
    folder, sources = odd_folder
    catalog = str(tmp_path / "catalog")
    first = run_cli("--catalog", catalog, "index", str(folder), "--quiet")
    assert first.returncode == 0, first.stderr
    assert "embedded 8 images" in first.stdout and "3 skipped" in first.stdout
    skipped = [line for line in first.stdout.splitlines() if line.strip().startswith("skipped ")]
    assert len(skipped) == 3 and all(line.count("\n") == 0 for line in skipped)
    assert {"readme.txt", "broken.jpg", "zero.png"} == {line.split(":")[0].rsplit("/", 1)[-1] for line in skipped}

    search = run_cli("--catalog", catalog, "search", str(sources[1]), str(sources[0]), "--json", "-k", "3")
    assert search.returncode == 0, search.stderr
    answers = [json.loads(line) for line in search.stdout.splitlines()]
    assert [answer["results"][0]["id"] for answer in answers] == ["cmyk.jpg", "ünïcödé ñame/été à la plage.jpg"]
    assert set(answers[0]) == {"query", "results", "took_ms"}
    assert {"id", "score", "title", "category", "price"} <= set(answers[0]["results"][0])

    again = run_cli("--catalog", catalog, "index", str(folder), "--quiet")
    assert "embedded 0 images" in again.stdout and "8 unchanged" in again.stdout


def test_index_with_metadata_search_filters_estimate_remove(tmp_path, demo_folder):
    catalog = str(tmp_path / "catalog")
    metadata = tmp_path / "items.jsonl"
    photos = sorted((demo_folder / "photos" / "food").rglob("*.jpg"))[:12]
    rows = [{"id": f"lot-{n}", "image": str(path), "title": path.stem, "category": "food" if n % 2 else "fruit",
             "price": 10 * (n + 1), "currency": "EUR", "maker": "Acme" if n < 4 else "Other"} for n, path in enumerate(photos)]
    metadata.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    assert run_cli("--catalog", catalog, "index", "--metadata", str(metadata), "--quiet").returncode == 0

    found = run_cli("--catalog", catalog, "search", str(photos[3]), "--json", "--category", "food", "-k", "20")
    results = json.loads(found.stdout)["results"]
    assert len(results) == 6 and all(result["category"] == "food" for result in results)
    assert results[0]["id"] == "lot-3" and results[0]["price"] == 40

    priced = run_cli("--catalog", catalog, "search", "--id", "lot-0", "--json", "--min-price", "50", "--max-price", "90")
    assert {result["price"] for result in json.loads(priced.stdout)["results"]} <= {50, 60, 70, 80, 90}

    makers = run_cli("--catalog", catalog, "search", "--id", "lot-5", "--json", "--where", "maker=Acme")
    assert {result["id"] for result in json.loads(makers.stdout)["results"]} == {"lot-0", "lot-1", "lot-2", "lot-3"}

    estimate = run_cli("--catalog", catalog, "estimate", str(photos[5]), "--json")
    assert estimate.returncode == 0
    body = json.loads(estimate.stdout)
    assert body["neighbours"][0]["id"] == "lot-5" and body["low"] <= body["price"] <= body["high"]

    assert run_cli("--catalog", catalog, "remove", "lot-3").returncode == 0
    after = json.loads(run_cli("--catalog", catalog, "search", str(photos[3]), "--json", "-k", "20").stdout)
    assert "lot-3" not in {result["id"] for result in after["results"]}
    info = json.loads(run_cli("--catalog", catalog, "info", "--json").stdout)
    assert info["items"] == 11 and info["vectors"] == 11
    check = run_cli("--catalog", catalog, "check")
    assert check.returncode == 0 and check.stdout.startswith("ok")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "missing.jpg"], "no catalogue"),
        (["index"], "give at least one"),
        (["index", "--metadata", "nope.csv"], "nope.csv: no such file or folder"),
        (["index", "no-such-folder"], "no-such-folder: no such file or folder"),
        (["--index", "bogus", "info"], "invalid choice"),
    ],
)
def test_errors_are_one_line_without_traceback(tmp_path, args, message):
    result = run_cli("--catalog", str(tmp_path / "catalog"), *args, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_query_image_is_one_error_line_and_other_queries_still_answer(tmp_path, demo_folder):
    catalog = str(tmp_path / "catalog")
    photos = sorted((demo_folder / "photos" / "sports").rglob("*.jpg"))
    run_cli("--catalog", catalog, "index", *map(str, photos[:3]), "--quiet")
    bad = tmp_path / "not a photo.jpg"
    bad.write_text("hello")
    result = run_cli("--catalog", catalog, "search", str(bad), str(photos[0]), "--json")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "not an image" in result.stderr
    assert json.loads(result.stdout)["results"][0]["id"] == photos[0].name
    unknown = run_cli("--catalog", catalog, "search", "--id", "nope")
    assert unknown.returncode == 2 and "no item with id 'nope'" in unknown.stderr


def test_catalog_from_environment_variable(tmp_path, demo_folder):
    photo = next((demo_folder / "photos" / "space").rglob("*.jpg"))
    shutil.copy(photo, tmp_path / "one.jpg")
    env = {"LOOKALIKE_CATALOG": str(tmp_path / "env-catalog")}
    assert run_cli("index", str(tmp_path / "one.jpg"), "--quiet", env=env).returncode == 0
    assert (tmp_path / "env-catalog" / "catalog.sqlite").exists()


def test_index_backend_choice_options_and_bench_index(tmp_path, demo_folder):
    catalog = str(tmp_path / "catalog")
    photos = sorted((demo_folder / "photos" / "seasonal").rglob("*.jpg"))[:30]
    assert run_cli("--catalog", catalog, "--index", "hnsw", "--index-option", "m=8", "index", *map(str, photos),
                   "--quiet").returncode == 0
    info = json.loads(run_cli("--catalog", catalog, "info", "--json").stdout)
    assert info["index_backend"] == "hnsw"
    bench = run_cli("--catalog", catalog, "--index", "annoy", "--index-option", "n_trees=10", "bench-index", "--json")
    assert bench.returncode == 0, bench.stderr
    report = json.loads(bench.stdout)
    assert report["backend"] == "annoy" and report["items"] == 30 and 0.9 <= report["recall"] <= 1.0
    text = run_cli("--catalog", catalog, "--index", "hnsw", "bench-index", "--queries", "20")
    assert "recall@10 against exact" in text.stdout
    wrong = run_cli("--catalog", catalog, "--index", "hnsw", "--index-option", "trees=3", "search", "--id",
                    photos[0].name)
    assert wrong.returncode == 2 and "does not take these options" in wrong.stderr


def test_prepare_builds_the_model_ahead_the_catalogue_s_own_when_there_is_one(tmp_path, demo_folder):
    env = {"LOOKALIKE_CACHE": str(tmp_path / "cache")}
    first = run_cli("--catalog", str(tmp_path / "none"), "prepare", "--json", env=env)
    assert first.returncode == 0, first.stderr
    prepared = json.loads(first.stdout)
    assert prepared["model_id"] == "efficientnet-lite0:avg:224:p1:int8"
    built_files = sorted(path.name for path in (tmp_path / "cache/models").iterdir())
    assert len(built_files) == 2 and built_files[0].endswith("-int8.onnx")  # the int8 model and the float graph
    assert not (tmp_path / "none").exists()  # preparing a model makes no catalogue
    photos = sorted((demo_folder / "photos").rglob("*.jpg"))[:3]
    built = run_cli("--catalog", str(tmp_path / "cat"), "--model", "mobilenetv2:avg", "index", "--quiet", *map(str, photos),
                    env=env)
    assert built.returncode == 0, built.stderr
    again = run_cli("--catalog", str(tmp_path / "cat"), "prepare", env=env)
    assert again.returncode == 0 and again.stdout.startswith("model mobilenetv2:avg:224:p1 ready in ")
    wrong = run_cli("--model", "no-such-model", "prepare", env=env)
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1 and "unknown model" in wrong.stderr
