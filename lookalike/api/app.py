"""The REST API and web page: a thin face over the engine (FastAPI)."""

from __future__ import annotations

import hmac
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from lookalike.api.limits import BodySizeLimit
from lookalike.engine import Engine, ItemExistsError, ItemNotFoundError, LookalikeError
from lookalike.images import DecodeLimits, ImageDecodeError
from lookalike.images.fetch import FetchError, FetchPolicy, fetch_image_bytes
from lookalike.store import CatalogError, Item, ItemFilter

WEB_FOLDER = Path(__file__).resolve().parents[1] / "web" / "static"
MAX_K = 200


@dataclass
class ApiSettings:
    token: str | None = None
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = DecodeLimits().max_pixels
    allow_private_urls: bool = False
    cors_origins: list[str] = field(default_factory=list)

    @classmethod
    def from_environment(cls) -> ApiSettings:
        origins = os.environ.get("LOOKALIKE_CORS_ORIGINS", "")
        return cls(
            token=os.environ.get("LOOKALIKE_API_TOKEN") or None,
            max_upload_bytes=int(float(os.environ.get("LOOKALIKE_MAX_UPLOAD_MB", "20")) * 1024 * 1024),
            max_pixels=int(os.environ.get("LOOKALIKE_MAX_PIXELS", DecodeLimits().max_pixels)),
            allow_private_urls=os.environ.get("LOOKALIKE_ALLOW_PRIVATE_URLS", "") in ("1", "true", "yes"),
            cors_origins=[origin.strip() for origin in origins.split(",") if origin.strip()],
        )


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message


def _error_status(error: Exception) -> int:
    if isinstance(error, ImageDecodeError):
        return 415 if "not an image" in str(error) else 422
    if isinstance(error, ItemNotFoundError):
        return 404
    if isinstance(error, ItemExistsError):
        return 409
    return 400


def create_app(engine: Engine, settings: ApiSettings | None = None) -> BodySizeLimit:
    settings = settings or ApiSettings.from_environment()
    engine.decode_limits = DecodeLimits(max_pixels=settings.max_pixels, max_bytes=settings.max_upload_bytes)
    fetch_policy = FetchPolicy(max_bytes=settings.max_upload_bytes, allow_private=settings.allow_private_urls)
    app = FastAPI(title="lookalike", version="0.1.0", description="Reverse image search over a catalogue of sold items.")
    registry = CollectorRegistry()
    requests_total = Counter("lookalike_requests_total", "HTTP requests", ["endpoint", "method", "status"], registry=registry)
    latency = Histogram("lookalike_request_seconds", "HTTP request latency", ["endpoint"], registry=registry,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
    embed_seconds = Histogram("lookalike_embed_seconds", "Time to embed a query photo", registry=registry,
                              buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
    items_gauge = Gauge("lookalike_catalog_items", "Items in the catalogue", registry=registry)
    items_gauge.set_function(engine.catalog.count)

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"])

    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            requests_total.labels(endpoint, request.method, str(status)).inc()
            latency.labels(endpoint).observe(time.perf_counter() - started)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError):
        return JSONResponse({"error": error.message}, status_code=error.status)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException):
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("query", "body"))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}".strip(": ")}, status_code=422)

    async def known_error(_: Request, error: Exception):
        return JSONResponse({"error": str(error)}, status_code=_error_status(error))

    for known in (ImageDecodeError, FetchError, LookalikeError, CatalogError):
        app.add_exception_handler(known, known_error)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception):
        # Logged with its traceback by the server; the client gets no internals.
        return JSONResponse({"error": "internal error"}, status_code=500)

    def require_token(request: Request) -> None:
        if not settings.token:
            raise ApiError(403, "writes are disabled: start the server with LOOKALIKE_API_TOKEN set")
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.token.encode()):
            raise ApiError(401, "a valid bearer token is required")

    def item_urls(item_id: str) -> dict:
        base = f"/api/items/{quote(item_id, safe='/')}"
        return {"url": base, "thumb_url": f"{base}/image?size=thumb", "image_url": f"{base}/image?size=full"}

    def present(body: dict) -> dict:
        for hit in body.get("results", []):
            hit.pop("image_path", None)
            hit.update(item_urls(hit["id"]))
        return body

    def item_filter(category, min_price, max_price) -> ItemFilter:
        return ItemFilter(category=category or None, min_price=min_price, max_price=max_price)

    def check_k(k: int) -> None:
        if not 1 <= k <= MAX_K:
            raise ApiError(422, f"k must be between 1 and {MAX_K}")

    @app.post("/api/search", summary="Similar items and a price estimate for a photo, an item id or a URL")
    async def search(request: Request, k: int = 12, category: str | None = None, min_price: float | None = None,
                     max_price: float | None = None):
        check_k(k)
        filters = item_filter(category, min_price, max_price)
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            image = await _upload(request, "image")
            result = await run_in_threadpool(engine.search, image, k, filters, True)
            embed_seconds.observe(result.embed_ms / 1000)
        elif content_type.startswith("application/json"):
            body = await _json_body(request)
            if body.get("item_id"):
                result = await run_in_threadpool(engine.search_by_id, str(body["item_id"]), k, filters, True)
            elif body.get("text"):
                result = await run_in_threadpool(engine.search_text, str(body["text"]), k, filters, True)
            elif body.get("url"):
                data = await run_in_threadpool(fetch_image_bytes, str(body["url"]), fetch_policy)
                result = await run_in_threadpool(engine.search, data, k, filters, True)
                result.query = str(body["url"])
                embed_seconds.observe(result.embed_ms / 1000)
            else:
                raise ApiError(422, 'send {"item_id": ...}, {"url": ...} or {"text": ...}')
        else:
            raise ApiError(415, "send a multipart/form-data upload with an 'image' field, or JSON")
        return present(result.to_dict())

    @app.get("/api/items", summary="Browse the catalogue")
    async def browse(category: str | None = None, q: str | None = None, page: int = 1, page_size: int = 24):
        items, total = await run_in_threadpool(engine.browse, category or None, q or None, page, page_size)
        return {"items": [{**item.public_dict(), **item_urls(item.id)} for item in items], "total": total,
                "page": page, "page_size": page_size}

    @app.get("/api/categories", summary="Categories and their item counts")
    async def categories():
        return [{"category": category, "items": count}
                for category, count in await run_in_threadpool(engine.catalog.category_counts) if category]

    @app.get("/api/items/{item_id:path}/image", summary="An item's photo: a cached thumbnail or the original")
    async def item_image(item_id: str, size: str = "thumb"):
        path = await run_in_threadpool(engine.thumbnail, item_id, size)
        media_type = "image/jpeg" if size == "thumb" else None
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/api/items/{item_id:path}", summary="One item")
    async def get_item(item_id: str):
        item = await run_in_threadpool(engine.catalog.get, item_id)
        if item is None:
            raise ApiError(404, f"no item with id {item_id!r}")
        body = item.public_dict()
        body.pop("image_path")
        return {**body, **item_urls(item.id)}

    @app.post("/api/items", status_code=201, summary="Add an item (bearer token)")
    async def add_item(request: Request):
        require_token(request)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(415, "send multipart/form-data with an 'image' file and the item's fields")
        form = await request.form()
        image = await _upload_from(form, "image")
        item = _item_from_form(form)
        added = await run_in_threadpool(engine.add_item, item, image, False)
        body = added.public_dict()
        body.pop("image_path")
        return {**body, **item_urls(added.id)}

    @app.delete("/api/items/{item_id:path}", summary="Remove an item (bearer token)")
    async def delete_item(item_id: str, request: Request):
        require_token(request)
        removed = await run_in_threadpool(engine.remove, [item_id])
        if not removed:
            raise ApiError(404, f"no item with id {item_id!r}")
        return {"removed": item_id}

    @app.get("/api/health", summary="Liveness and catalogue size")
    async def health():
        return {"status": "ok", "items": await run_in_threadpool(engine.catalog.count), "model_id": engine.catalog.model_id}

    @app.get("/metrics", include_in_schema=False)
    async def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(WEB_FOLDER / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=WEB_FOLDER), name="static")

    @app.on_event("shutdown")
    async def save_index() -> None:
        await run_in_threadpool(engine.flush)

    async def _upload(request: Request, name: str) -> bytes:
        return await _upload_from(await request.form(), name)

    async def _upload_from(form, name: str) -> bytes:
        upload = form.get(name)
        if not isinstance(upload, UploadFile):
            raise ApiError(422, f"the form needs a file field named {name!r}")
        data = await upload.read()
        if not data:
            raise ApiError(422, "the uploaded file is empty")
        return data

    async def _json_body(request: Request) -> dict:
        try:
            body = json.loads(await request.body() or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise ApiError(422, "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(422, "the JSON body must be an object")
        return body

    return BodySizeLimit(app, settings.max_upload_bytes)


def _item_from_form(form) -> Item:
    def text(name: str) -> str | None:
        value = form.get(name)
        return value.strip() or None if isinstance(value, str) else None

    price = text("price")
    try:
        price_value = float(price) if price is not None else None
    except ValueError:
        raise ApiError(422, f"price {price!r} is not a number") from None
    extra_text = text("extra")
    try:
        extra = json.loads(extra_text) if extra_text else {}
    except ValueError:
        raise ApiError(422, "extra must be a JSON object") from None
    if not isinstance(extra, dict):
        raise ApiError(422, "extra must be a JSON object")
    item_id = text("id") or uuid.uuid4().hex
    if len(item_id) > 512 or any(ord(char) < 32 for char in item_id):
        raise ApiError(422, "id must be at most 512 printable characters")
    return Item(id=item_id, title=text("title"), category=text("category"), price=price_value,
                currency=text("currency"), sold_at=text("sold_at"), extra=extra)
