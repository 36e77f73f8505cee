"""The engine on a real PostgreSQL server (tests/postgres_server.py) through the real CLI: a SQLite catalogue
copied into PostgreSQL without re-embedding, searched through pgvector with filters in SQL, lots removed, the
pgvector table lost and rebuilt from the store, and a store that refuses us named without its password."""

from __future__ import annotations

import json
import shutil
import time

import httpx
import psycopg
import pytest

from tests.conftest import run_cli
from tests.postgres_server import PASSWORD


def test_a_sqlite_catalogue_moves_to_postgresql_and_searches_through_pgvector(tmp_path, demo_engine, demo_folder,
                                                                               postgres_url):
    catalog = tmp_path / "catalog"
    shutil.copytree(demo_engine.directory, catalog)
    moved = run_cli("--catalog", str(catalog), "migrate-store", postgres_url)
    assert moved.returncode == 0, moved.stderr
    assert f"copied {demo_engine.catalog.count()} lots" in moved.stdout and PASSWORD not in moved.stdout

    on_postgres = ["--catalog", str(catalog), "--store", postgres_url, "--index", "pgvector"]
    info = json.loads(run_cli(*on_postgres, "info", "--json").stdout)
    assert info["items"] == demo_engine.catalog.count() and info["vectors"] == info["items"]
    assert info["store"].startswith("postgresql://127.0.0.1:") and PASSWORD not in info["store"]
    checked = run_cli(*on_postgres, "check")  # builds the pgvector table from the stored vectors
    assert checked.returncode == 0, checked.stdout + checked.stderr

    query = str(demo_folder / "photos" / "vehicles" / "race" / "indycar.jpg")
    found = json.loads(run_cli(*on_postgres, "--query-mode", "single", "search", query, "-k", "5", "--json").stdout)
    assert found["results"][0]["id"] == "vehicles/race/indycar"
    filtered = json.loads(run_cli(*on_postgres, "--query-mode", "single", "search", query, "-k", "10", "--json",
                                  "--category", "food", "--min-price", "20", "--max-price", "40").stdout)["results"]
    assert len(filtered) == 10 and all(hit["category"] == "food" and 20 <= hit["price"] <= 40 for hit in filtered)

    assert run_cli(*on_postgres, "remove", "vehicles/race/indycar").returncode == 0
    after = json.loads(run_cli(*on_postgres, "--query-mode", "single", "search", query, "-k", "5", "--json").stdout)
    assert "vehicles/race/indycar" not in {hit["id"] for hit in after["results"]}

    # The pgvector table lost: rebuilt from the store, the source of truth, on the next start.
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("DROP TABLE lookalike_vectors")
    assert run_cli(*on_postgres, "check").returncode == 0
    cherry = str(demo_folder / "photos" / "food" / "fruit" / "Cherry_Stella.jpg")
    again = json.loads(run_cli(*on_postgres, "--query-mode", "single", "search", cherry, "-k", "1", "--json").stdout)
    assert again["results"][0]["id"] == "food/fruit/Cherry_Stella"

    twice = run_cli("--catalog", str(catalog), "migrate-store", postgres_url)
    assert twice.returncode == 2 and "already holds" in twice.stderr and len(twice.stderr.strip().splitlines()) == 1


def test_a_wrong_store_is_one_line_and_exit_3_without_the_password(tmp_path, postgres_server):
    wrong = postgres_server.url().replace(PASSWORD, "wrong-Pw-123")
    for url in (wrong, postgres_server.url().replace(f":{postgres_server.port}/", ":9/")):
        result = run_cli("--catalog", str(tmp_path / "catalog"), "--store", url, "info")
        assert result.returncode == 3, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "PostgreSQL at postgresql://127.0.0.1:" in result.stderr
        assert "wrong-Pw-123" not in result.stderr and PASSWORD not in result.stderr


@pytest.mark.slow  # about 20 s with its own PostgreSQL server; make test-slow (and CI) runs it
def test_a_server_answers_503_while_postgresql_is_down_and_recovers_by_itself(tmp_path, demo_engine, foolbox_photos):
    from lookalike.store import Catalog
    from tests.conftest import Server
    from tests.postgres_server import PostgresServer

    postgres = PostgresServer(tmp_path / "postgres")  # its own server: this test stops it
    postgres.start()
    url = postgres.create_database("catalog")
    Catalog(tmp_path / "copy", store=url).close()
    target = Catalog(tmp_path / "copy", store=url)
    demo_engine.catalog.copy_to(target)
    target.close()
    server = Server(tmp_path / "served", {"LOOKALIKE_STORE": url}, ("--index", "pgvector", "--query-mode", "single"))
    photo = foolbox_photos[0][0]

    def search() -> httpx.Response:
        return httpx.post(f"{server.url}/api/search", timeout=60, files={"image": (photo.name, photo.read_bytes(), "image/jpeg")})

    try:
        assert search().status_code == 200
        postgres.stop()
        for response in (search(), httpx.get(f"{server.url}/api/items/food/fruit/Cherry_Stella", timeout=60)):
            assert response.status_code == 503, response.text
            assert "PostgreSQL at postgresql://127.0.0.1:" in response.json()["error"] and PASSWORD not in response.text
            assert response.headers["Retry-After"]
        postgres.start()
        # The pool spaces its reconnection attempts out (exponential backoff), so the first request after the
        # restart may still be refused: the server must answer again by itself within seconds.
        deadline = time.monotonic() + 60
        while (answer := search()).status_code != 200 and time.monotonic() < deadline:
            time.sleep(1)
        assert answer.status_code == 200 and server.alive(), answer.text
        assert httpx.get(f"{server.url}/api/items/food/fruit/Cherry_Stella", timeout=60).status_code == 200
    finally:
        server.stop()
        postgres.stop()
