"""The API's OpenAPI contract holds: Schemathesis finds nothing against a live server,
error answers carry the headers HTTP requires, and /docs can upload a photo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from lookalike.demo import backgrounds, load_cutout, make_phone_photo
from tests.conftest import TOKEN, Server, copy_catalog

CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture(scope="module")
def own_server(tmp_path_factory, demo_engine):
    """A server of its own: Schemathesis follows links from listed items to DELETE, so it may remove demo items."""
    catalog = copy_catalog(demo_engine, tmp_path_factory.mktemp("contract") / "catalog")
    running = Server(catalog, {"LOOKALIKE_API_TOKEN": TOKEN, "LOOKALIKE_ALLOW_PRIVATE_URLS": ""})
    yield running
    running.stop()


def schemathesis(url: str, *headers: str) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("st")), "--config-file", str(CONFIG), "run", f"{url}/openapi.json",
               "--checks", "all", "--max-examples", "40", "--seed", "20261129",
               # A generator health check (hypothesis found few values it liked), not a finding about the API.
               "--suppress-health-check", "filter_too_much"]
    for header in headers:
        command += ["-H", header]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("headers", [(f"Authorization: Bearer {TOKEN}",), ()], ids=["with-token", "without-token"])
def test_schemathesis_finds_no_failure(own_server, headers):
    run = schemathesis(own_server.url, *headers)
    summary = run.stdout[run.stdout.rfind("SUMMARY"):]
    print(summary[-1500:])
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "Tested: " in summary and "failure" not in summary.splitlines()[-1]


def test_schemathesis_finds_no_failure_when_writes_are_off(locked_server):
    run = schemathesis(locked_server.url, f"Authorization: Bearer {TOKEN}")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]


def test_every_operation_declares_bodies_responses_and_errors(own_server):
    spec = httpx.get(own_server.url + "/openapi.json").json()
    upload = spec["paths"]["/api/search"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    form = spec["components"]["schemas"][upload["$ref"].rsplit("/", 1)[-1]]
    image = form["properties"]["image"]  # one or more photos: an array of files
    assert form["required"] == ["image"] and image["items"]["format"] == "binary"
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            success = next(status for status in responses if status.startswith("2"))
            assert responses[success].get("content"), (method, path)
            for status, response in responses.items():
                if status.startswith("4"):
                    assert response["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody"), (method, path, status)
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_error_answers_keep_the_headers_http_requires(own_server):
    with httpx.Client(base_url=own_server.url) as client:
        not_allowed = client.request("PUT", "/api/items")
        assert not_allowed.status_code == 405 and not_allowed.headers["allow"] == "GET, HEAD, POST"
        assert client.request("PATCH", "/api/items/a/b").headers["allow"] == "DELETE, GET, HEAD"
        assert client.request("DELETE", "/api/items/a/image").headers["allow"] == "GET, HEAD"
        unauthorized = client.delete("/api/items/x")
        assert unauthorized.status_code == 401 and unauthorized.headers["www-authenticate"].startswith("Bearer")
        for params in ({"min_price": "nan"}, {"max_price": "inf"}, {"k": "99999999999999999999"}, {"k": "201"}):
            response = client.post("/api/search/item", params=params, json={"item_id": "x"})
            assert response.status_code == 422 and "error" in response.json(), params
        assert client.post("/api/items", headers={"Authorization": f"Bearer {TOKEN}"},
                           files={"image": ("a.jpg", b"x")}, data={"price": "nan"}).status_code == 422


def test_docs_page_uploads_a_photo(browser, own_server, stamps, tmp_path):
    """FastAPI's /docs, served without a CDN: "Try it out" on the photo search, choose a file, execute."""
    stamp = next(s for s in stamps if s.id == "plants/flowers/flower3")
    photo = tmp_path / "phone.jpg"
    photo.write_bytes(make_phone_photo(load_cutout(stamp), backgrounds()[0], np.random.default_rng(3)))
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.goto(own_server.url + "/docs")
    operation = page.locator("#operations-search-search_photo_api_search_post")
    operation.locator(".opblock-summary").click()
    operation.locator(".try-out__btn").click()
    operation.locator("input[type=file]").first.set_input_files(str(photo))  # `image` is a list: one or more photos
    operation.locator(".execute").click()
    live = operation.locator(".live-responses-table tbody .response-col_status")
    live.first.wait_for(timeout=60_000)
    assert live.first.inner_text().strip().startswith("200")
    assert stamp.id in operation.locator(".live-responses-table .microlight").first.inner_text()
    context.close()
