"""The REST API against a real server process on localhost."""

from __future__ import annotations

import http.server
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from lookalike.demo import backgrounds, load_cutout, make_phone_photo
from tests.conftest import TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def photo_of(stamps):
    """A new phone photo of a demo item that the default pipeline finds first."""
    stamp = next(s for s in stamps if s.id == "plants/flowers/flower3")
    data = make_phone_photo(load_cutout(stamp), backgrounds()[0], np.random.default_rng(3))
    return stamp.id, data


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def test_health_and_metrics(client):
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["items"] >= 300
    client.post("/api/search/item", json={"item_id": "plants/flowers/flower3"})
    metrics = client.get("/metrics").text
    assert 'lookalike_requests_total{endpoint="/api/search/item",method="POST",status="200"}' in metrics
    assert "lookalike_request_seconds_bucket" in metrics and "lookalike_catalog_items" in metrics
    assert "lookalike_embed_seconds" in metrics


def test_upload_a_photo_finds_the_item_with_an_estimate(client, photo_of):
    item_id, data = photo_of
    response = client.post("/api/search", params={"k": 5}, files={"image": ("phone.jpg", data, "image/jpeg")})
    assert response.status_code == 200
    body = response.json()
    assert body["results"][0]["id"] == item_id and len(body["results"]) == 5
    first = body["results"][0]
    assert {"id", "score", "title", "category", "price", "thumb_url"} <= set(first) and "image_path" not in first
    estimate = body["estimate"]
    assert estimate["low"] <= estimate["price"] <= estimate["high"] and estimate["neighbours"]
    assert estimate["calibrated"] and estimate["level"] == 0.8 and "80%" in estimate["meaning"]
    assert estimate["declined"] is None
    suggestions = body["suggestions"]
    assert suggestions["category"]["value"] == "plants" and item_id in suggestions["category"]["support"]
    assert set(suggestions["fields"]) | set(suggestions["withheld"]) == {"subcategory"}
    assert body["took_ms"] > 0


def test_a_photo_like_no_lot_gets_no_estimate_and_the_reason(client):
    import skimage.data

    body = client.post("/api/search", files={"image": ("coins.jpg", jpeg(Image.fromarray(skimage.data.coins())),
                                                       "image/jpeg")}).json()
    assert body["estimate"]["price"] is None and "not enough similar sold lots" in body["estimate"]["declined"]
    assert body["results"]  # the similar lots are still shown


def test_search_by_id_and_filters(client):
    body = client.post("/api/search/item", params={"k": 8, "category": "animals", "min_price": 50, "max_price": 150},
                       json={"item_id": "plants/flowers/flower3"}).json()
    assert len(body["results"]) == 8
    assert all(hit["category"] == "animals" and 50 <= hit["price"] <= 150 for hit in body["results"])
    assert "plants/flowers/flower3" not in {hit["id"] for hit in body["results"]}


@pytest.fixture(scope="module")
def image_server(tmp_path_factory, photo_of):
    """A local HTTP server with one photo and a redirect to it."""
    folder = tmp_path_factory.mktemp("web")
    (folder / "phone.jpg").write_bytes(photo_of[1])

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def do_GET(self):  # noqa: N802 - http.server's naming
            if self.path.startswith("/redirect"):
                hops = int(self.path.rsplit("/", 1)[-1])
                self.send_response(302)
                self.send_header("Location", f"/redirect/{hops - 1}" if hops > 1 else "/phone.jpg")
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_search_by_url(client, image_server, photo_of):
    body = client.post("/api/search/url", json={"url": f"{image_server}/phone.jpg"}, params={"k": 3}).json()
    assert body["results"][0]["id"] == photo_of[0] and body["query"].endswith("phone.jpg")
    redirected = client.post("/api/search/url", json={"url": f"{image_server}/redirect/2"})
    assert redirected.status_code == 200
    too_many = client.post("/api/search/url", json={"url": f"{image_server}/redirect/6"})
    assert too_many.status_code == 400 and "redirects" in too_many.json()["error"]
    missing = client.post("/api/search/url", json={"url": f"{image_server}/nothing.jpg"})
    assert missing.status_code == 400 and "404" in missing.json()["error"]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.jpg", "gopher://x/"])
def test_non_http_urls_are_refused(client, url):
    response = client.post("/api/search/url", json={"url": url})
    assert response.status_code == 422 and "http" in response.json()["error"]  # the schema allows http(s) only


def test_private_urls_are_refused_by_default(locked_server, image_server):
    with httpx.Client(base_url=locked_server.url, timeout=30) as http:
        for url in (f"{image_server}/phone.jpg", "http://localhost:9/x.jpg", "http://169.254.169.254/latest/meta-data",
                    "http://10.0.0.1/a.jpg", "http://[::1]/a.jpg"):
            response = http.post("/api/search/url", json={"url": url})
            assert response.status_code == 400, url
            assert "not allowed" in response.json()["error"]


def test_writes_need_the_token(client, locked_server, stamps):
    photo = jpeg(Image.open(io.BytesIO(jpeg(Image.new("RGB", (64, 64), "red")))))
    form = {"id": "should-not-exist", "title": "x"}
    assert client.post("/api/items", data=form, files={"image": ("a.jpg", photo)}).status_code == 401
    wrong = client.post("/api/items", data=form, files={"image": ("a.jpg", photo)}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "token" in wrong.json()["error"]
    assert client.delete("/api/items/plants/flowers/flower3").status_code == 401
    with httpx.Client(base_url=locked_server.url) as http:
        disabled = http.post("/api/items", data=form, files={"image": ("a.jpg", photo)}, headers=AUTH)
        assert disabled.status_code == 403 and "disabled" in disabled.json()["error"]
    assert client.get("/api/items/should-not-exist").status_code == 404


def test_add_is_searchable_at_once_and_delete_removes(client, stamps):
    stamp = next(s for s in stamps if s.subcategory == "birds")
    from lookalike.demo import on_white

    photo = jpeg(on_white(load_cutout(stamp)).rotate(90, expand=True))
    before = client.get("/api/health").json()["items"]
    added = client.post("/api/items", headers=AUTH, files={"image": ("new lot.jpg", photo, "image/jpeg")},
                        data={"id": "lot/ünï 42", "title": "Turned bird", "category": "birds", "price": "250",
                              "currency": "EUR", "extra": '{"maker": "Test"}'})
    assert added.status_code == 201, added.text
    assert added.json()["id"] == "lot/ünï 42" and added.json()["extra"] == {"maker": "Test"}
    assert client.get("/api/health").json()["items"] == before + 1
    found = client.post("/api/search", params={"k": 1}, files={"image": ("q.jpg", photo)}).json()
    assert found["results"][0]["id"] == "lot/ünï 42" and found["results"][0]["score"] > 0.99
    item = client.get("/api/items/lot/ünï 42")
    assert item.status_code == 200 and item.json()["price"] == 250
    image = client.get("/api/items/lot/ünï 42/image", params={"size": "full"})
    assert image.status_code == 200 and image.content == photo
    duplicate = client.post("/api/items", headers=AUTH, files={"image": ("a.jpg", photo)}, data={"id": "lot/ünï 42"})
    assert duplicate.status_code == 409

    assert client.delete("/api/items/lot/ünï 42", headers=AUTH).json() == {"removed": "lot/ünï 42"}
    assert client.get("/api/items/lot/ünï 42").status_code == 404
    again = client.post("/api/search", params={"k": 5}, files={"image": ("q.jpg", photo)}).json()
    assert "lot/ünï 42" not in {hit["id"] for hit in again["results"]}
    assert client.delete("/api/items/lot/ünï 42", headers=AUTH).status_code == 404


def test_add_rejects_bad_input_and_leaves_the_catalogue_unchanged(client):
    before = client.get("/api/health").json()["items"]
    cases = [
        ({"image": ("a.jpg", b"not an image")}, {"id": "bad-1"}, 415),
        ({"image": ("a.jpg", b"")}, {"id": "bad-2"}, 422),
        ({"image": ("a.jpg", jpeg(Image.new("RGB", (8, 8))))}, {"id": "bad-3", "price": "cheap"}, 422),
        ({"image": ("a.jpg", jpeg(Image.new("RGB", (8, 8))))}, {"id": "bad-4", "extra": "[1, 2]"}, 422),
        ({}, {"id": "bad-5"}, 422),
    ]
    for files, data, status in cases:
        response = client.post("/api/items", headers=AUTH, files=files or {"other": ("x.txt", b"x")}, data=data)
        assert response.status_code == status, (data, response.text)
        assert "error" in response.json()
    assert client.get("/api/health").json()["items"] == before


def test_limits(client, server):
    noise = np.random.default_rng(0).integers(0, 255, (1200, 1200, 3), dtype=np.uint8)
    big = jpeg(Image.fromarray(noise), quality=100)
    assert len(big) > 2 * 1024 * 1024
    too_big = client.post("/api/search", files={"image": ("big.jpg", big)})
    assert too_big.status_code == 413 and "limit" in too_big.json()["error"]

    body = (b'--x\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n" + big + b"\r\n--x--\r\n")

    def chunks():  # no Content-Length: the limit must hold while streaming
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    streamed = client.post("/api/search", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert streamed.status_code == 413

    many_pixels = io.BytesIO()
    Image.new("L", (3000, 3000)).save(many_pixels, "PNG")
    assert client.post("/api/search", files={"image": ("p.png", many_pixels.getvalue())}).status_code == 422
    not_image = client.post("/api/search", files={"image": ("x.jpg", b"<html>hello</html>")})
    assert not_image.status_code == 415 and not_image.json()["error"]
    truncated = client.post("/api/search", files={"image": ("t.jpg", jpeg(Image.new("RGB", (300, 300)))[:500])})
    assert truncated.status_code == 422
    assert client.post("/api/search", content=b"hello", headers={"Content-Type": "text/plain"}).status_code == 415
    assert client.post("/api/search/item", content=b"{nope", headers={"Content-Type": "application/json"}).status_code == 422
    assert client.post("/api/search/item", json={}).status_code == 422
    assert client.post("/api/search/item", params={"k": 0}, json={"item_id": "x"}).status_code == 422
    assert client.post("/api/search/item", params={"k": "many"}, json={"item_id": "x"}).status_code == 422
    assert client.post("/api/search/item", json={"item_id": "no-such-item"}).status_code == 404
    assert server.alive() and client.get("/api/health").status_code == 200


def test_path_traversal_in_ids_reads_no_files(client):
    for path in ("/api/items/../../../../etc/passwd", "/api/items/%2e%2e/%2e%2e/etc/passwd/image",
                 "/api/items/..%2F..%2Fcatalog.sqlite/image?size=full"):
        response = client.get(path)
        assert response.status_code == 404 and "root:" not in response.text


def test_browse_with_paging_text_and_category(client):
    first = client.get("/api/items", params={"page": 1, "page_size": 10}).json()
    second = client.get("/api/items", params={"page": 2, "page_size": 10}).json()
    assert len(first["items"]) == 10 and first["total"] >= 300
    assert not {item["id"] for item in first["items"]} & {item["id"] for item in second["items"]}
    flowers = client.get("/api/items", params={"q": "flower", "category": "plants"}).json()
    assert flowers["total"] > 0 and all("flower" in (item["title"] + item["id"]).lower() for item in flowers["items"])
    # Out of the declared range: 422 with the error body, never a 500.
    for params in ({"page": 0}, {"page": "99999999999999999999"}, {"page_size": 201}):
        response = client.get("/api/items", params=params)
        assert response.status_code == 422 and response.json()["error"], params
    categories = client.get("/api/categories").json()
    assert {"category": "animals", "items": 128} in categories


def test_thumbnails_are_made_once(client):
    first = client.get("/api/items/plants/flowers/flower3/image")
    second = client.get("/api/items/plants/flowers/flower3/image?size=thumb")
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert first.content == second.content and max(Image.open(io.BytesIO(first.content)).size) <= 320
    assert client.get("/api/items/plants/flowers/flower3/image?size=huge").status_code == 422


def test_concurrent_searches_adds_and_deletes(client, photo_of, stamps):
    item_id, data = photo_of
    cutouts = [jpeg(load_cutout(stamp).convert("RGB")) for stamp in stamps[:6]]

    def search(_):
        response = client.post("/api/search", params={"k": 3}, files={"image": ("q.jpg", data)})
        return response.status_code, response.json()["results"][0]["id"]

    def write(number):
        added = client.post("/api/items", headers=AUTH, files={"image": ("c.jpg", cutouts[number])},
                            data={"id": f"concurrent-{number}"})
        removed = client.delete(f"/api/items/concurrent-{number}", headers=AUTH)
        return added.status_code, removed.status_code

    with ThreadPoolExecutor(8) as pool:
        searches = pool.map(search, range(16))
        writes = pool.map(write, range(6))
        assert all(result == (200, item_id) for result in searches)
        assert all(result == (201, 200) for result in writes)
    assert client.get("/api/items", params={"q": "concurrent"}).json()["total"] == 0


def test_openapi_docs_and_no_cors_by_default(client):
    assert client.get("/docs").status_code == 200
    assert "/api/search" in client.get("/openapi.json").json()["paths"]
    response = client.get("/api/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers
