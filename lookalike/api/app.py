"""The REST API and web page: a thin face over the engine (FastAPI).

Every body and answer is a Pydantic model (api/schemas.py), so /openapi.json is
the whole contract; every error is ``{"error": "..."}`` with the status its kind
maps to (STATUS_BY_KIND), never a message matched by its text.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import mimetypes
import pathlib
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import Depends, FastAPI, File, Form, Path, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.routing import Match

from lookalike.api.limits import Admission, BodySizeLimit, Busy
from lookalike.api.schemas import (
    ITEM_ID_PATTERN,
    CategoryCount,
    DuplicatesResponse,
    DuplicatesRunning,
    Health,
    ItemOut,
    ItemPage,
    Removed,
    SearchByItem,
    SearchByText,
    SearchByUrl,
    SearchResponse,
    errors,
)
from lookalike.engine import Engine, ErrorKind, LookalikeError, SearchResult
from lookalike.images.fetch import FetchPolicy, fetch_image_bytes
from lookalike.store import Item, ItemFilter

WEB_FOLDER = pathlib.Path(__file__).resolve().parents[1] / "web" / "static"
MAX_K = 200
MAX_PAGE = 1_000_000
STATUS_BY_KIND = {
    ErrorKind.BAD_INPUT: 400, ErrorKind.INVALID: 422, ErrorKind.UNSUPPORTED_MEDIA: 415, ErrorKind.TOO_LARGE: 413,
    ErrorKind.NOT_FOUND: 404, ErrorKind.EXISTS: 409, ErrorKind.CONFLICT: 409, ErrorKind.UNAUTHORIZED: 401, ErrorKind.FORBIDDEN: 403,
    ErrorKind.UNAVAILABLE: 503,
}
#: Headers HTTP requires (or strongly expects) with some statuses.
HEADERS_BY_KIND = {ErrorKind.UNAUTHORIZED: {"WWW-Authenticate": 'Bearer realm="lookalike"'},
                   ErrorKind.UNAVAILABLE: {"Retry-After": "5"}}
IMAGE_RESPONSE = {200: {"description": "The photo", "content": {
    "image/*": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


class ItemIdConvertor(PathConvertor):
    """An item id in a path: any characters, slashes too, but not ending in /image, /photos or /photos/N,
    which name the item's photos; so /api/items/{id} and its photo routes never claim each other's requests."""

    regex = r"(?!.*/(image|photos|photos/[0-9]+)$).+"


register_url_convertor("item_id", ItemIdConvertor())


@dataclass(frozen=True)
class SearchParams:
    k: int
    filter: ItemFilter


def search_params(
    k: Annotated[int, Query(ge=1, le=MAX_K, description="Number of results")] = 12,
    category: Annotated[str | None, Query(max_length=512, description="Only items of this category")] = None,
    min_price: Annotated[float | None, Query(allow_inf_nan=False, description="Only items sold for at least this")] = None,
    max_price: Annotated[float | None, Query(allow_inf_nan=False, description="Only items sold for at most this")] = None,
) -> SearchParams:
    return SearchParams(k, ItemFilter(category=category or None, min_price=min_price, max_price=max_price))


Params = Annotated[SearchParams, Depends(search_params)]
bearer = HTTPBearer(auto_error=False, description="The token the server was started with (LOOKALIKE_API_TOKEN)")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def item_urls(item_id: str, photo: int = 0) -> dict:
    base = f"/api/items/{quote(item_id, safe='/')}"
    return {"url": base, "thumb_url": f"{base}/photos/{photo}?size=thumb", "image_url": f"{base}/photos/{photo}?size=full"}


def item_body(item: Item) -> dict:
    photos = [{"index": index, **{name: url for name, url in item_urls(item.id, index).items() if name != "url"}}
              for index in range(len(item.photos))]
    return {**item.public_dict(), **item_urls(item.id), "photo_count": len(item.photos), "photos": photos}


def search_body(result: SearchResult) -> dict:
    body = result.to_dict(with_match=True)
    for hit in body["results"]:
        hit.update(item_urls(hit["id"], hit["matched_photo"]))
    return body


def create_app(engine: Engine) -> BodySizeLimit:
    """The app for an engine; its settings (token, limits, CORS) come from ``engine.settings``."""
    settings = engine.settings
    fetch_policy = FetchPolicy(max_bytes=settings.max_upload_bytes, allow_private=settings.allow_private_urls)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        # Read once per catalogue state; the first search should not wait for them.
        threading.Thread(target=_warm, args=(engine,), daemon=True, name="warm").start()
        yield
        await run_in_threadpool(engine.flush)

    app = FastAPI(title="lookalike", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Reverse image search over a catalogue of sold items: similar items and a price estimate "
                              "for a photo, an item id, a URL or (with a CLIP model) a text. Errors are "
                              '`{"error": "..."}`. Writes need the bearer token the server was started with.')
    registry = CollectorRegistry()
    requests_total = Counter("lookalike_requests_total", "HTTP requests", ["endpoint", "method", "status"], registry=registry)
    latency = Histogram("lookalike_request_seconds", "HTTP request latency", ["endpoint"], registry=registry,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
    embed_seconds = Histogram("lookalike_embed_seconds", "Time to embed a query photo", registry=registry,
                              buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
    Gauge("lookalike_catalog_items", "Items in the catalogue", registry=registry).set_function(engine.count)
    waited = Histogram("lookalike_queue_wait_seconds", "Time a search or add waited for an embedding slot",
                       registry=registry, buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
    refused = Counter("lookalike_busy_rejections_total", "Requests refused with 503 because the embedding work was full",
                      registry=registry)
    admission = Admission(settings.search_workers, settings.search_queue, waited.observe, refused.inc)
    Gauge("lookalike_queue_depth", "Searches and adds waiting for an embedding slot",
          registry=registry).set_function(lambda: admission.waiting)
    Gauge("lookalike_embedding_running", "Searches and adds embedding now", registry=registry).set_function(
        lambda: admission.running)

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"], allow_headers=["*"])

    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            endpoint = getattr(request.scope.get("route"), "path", "unmatched")
            requests_total.labels(endpoint, request.method, str(status)).inc()
            latency.labels(endpoint).observe(time.perf_counter() - started)

    @app.exception_handler(LookalikeError)
    async def known_error(_: Request, error: LookalikeError):
        return JSONResponse({"error": str(error)}, status_code=STATUS_BY_KIND.get(error.kind, 400),
                            headers=HEADERS_BY_KIND.get(error.kind))

    @app.exception_handler(Busy)
    async def busy(_: Request, error: Busy):
        return JSONResponse({"error": str(error)}, status_code=503, headers={"Retry-After": str(error.retry_after)})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        headers = dict(error.headers or {})  # they matter: Allow with a 405, WWW-Authenticate with a 401
        if error.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(app, request))
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("query", "body", "path"))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}".strip(": ")}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception):
        # Logged with its traceback by the server; the client gets no internals.
        return JSONResponse({"error": "internal error"}, status_code=500)

    def require_token(credentials: Credentials) -> None:
        # No credentials is 401 (authenticate first); credentials on a server without writes is 403.
        given = credentials.credentials.strip().encode() if credentials else b""
        disabled = "writes are disabled: start the server with LOOKALIKE_API_TOKEN set"
        if not given:
            raise LookalikeError("a valid bearer token is required" + ("" if settings.api_token else f"; {disabled}"),
                                 ErrorKind.UNAUTHORIZED)
        if not settings.api_token:
            raise LookalikeError(disabled, ErrorKind.FORBIDDEN)
        if not hmac.compare_digest(given, settings.api_token.encode()):
            raise LookalikeError("a valid bearer token is required", ErrorKind.UNAUTHORIZED)

    def multipart_only(request: Request) -> None:
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            raise LookalikeError("send multipart/form-data with an 'image' file", ErrorKind.UNSUPPORTED_MEDIA)

    async def upload_bytes(upload: UploadFile) -> bytes:
        data = await upload.read()
        if not data:
            raise LookalikeError("the uploaded file is empty", ErrorKind.INVALID)
        return data

    async def uploads(files: list[UploadFile], limit: int) -> list[bytes]:
        if len(files) > limit:
            raise LookalikeError(f"{len(files)} photos, over the limit of {limit}", ErrorKind.INVALID)
        return [await upload_bytes(upload) for upload in files]

    async def answer(search, *args) -> dict:
        result = await admission.run(lambda: run_in_threadpool(search, *args))
        if result.embed_ms:
            embed_seconds.observe(result.embed_ms / 1000)
        return search_body(result)

    @app.post("/api/search", response_model=SearchResponse, tags=["search"], responses=errors(400, 413, 415, 422, 503),
              dependencies=[Depends(multipart_only)],
              summary="Similar lots, suggested fields and a price estimate for a photo, or for several photos of one new item")
    async def search_photo(image: Annotated[list[UploadFile], File(
                               description="The photo (JPEG, PNG, WebP, HEIC, ...); several `image` parts are several "
                                           "photos of one new item, searched together")],
                           params: Params):
        photos = await uploads(image, settings.max_query_photos)
        return await answer(engine.search, photos, params.k, params.filter, True)

    @app.post("/api/search/item", response_model=SearchResponse, tags=["search"], responses=errors(400, 404, 422, 503),
              summary="More like this: items similar to one already in the catalogue")
    async def search_item(body: SearchByItem, params: Params):
        return await answer(engine.search_by_id, body.item_id, params.k, params.filter, True)

    @app.post("/api/search/url", response_model=SearchResponse, tags=["search"], responses=errors(400, 413, 415, 422, 503),
              summary="Similar items for a photo at a public http(s) URL")
    async def search_url(body: SearchByUrl, params: Params):
        url = str(body.url)
        data = await run_in_threadpool(fetch_image_bytes, url, fetch_policy)
        response = await answer(engine.search, data, params.k, params.filter, True)
        return {**response, "query": url}

    if engine.supports_text:
        @app.post("/api/search/text", response_model=SearchResponse, tags=["search"], responses=errors(400, 422, 503),
                  summary="Items whose photos match a description (this catalogue's model has a text tower)")
        async def search_text(body: SearchByText, params: Params):
            return await answer(engine.search_text, body.text, params.k, params.filter, True)

    @app.get("/api/items", response_model=ItemPage, tags=["catalogue"], responses=errors(400, 422, 503),
             summary="Browse the catalogue, newest first")
    async def browse(category: Annotated[str | None, Query(max_length=512)] = None,
                     q: Annotated[str | None, Query(max_length=512, description="Words in the title or id")] = None,
                     page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
                     page_size: Annotated[int, Query(ge=1, le=200)] = 24):
        items, total = await run_in_threadpool(engine.browse, category or None, q or None, page, page_size)
        return {"items": [item_body(item) for item in items], "total": total, "page": page, "page_size": page_size}

    @app.get("/api/categories", response_model=list[CategoryCount], tags=["catalogue"], responses=errors(503),
             summary="Categories and their item counts")
    async def categories():
        return [{"category": category, "items": count}
                for category, count in await run_in_threadpool(engine.categories) if category]

    async def photo_response(item_id: str, size: str, position: int) -> FileResponse:
        path = await run_in_threadpool(engine.photo_file, item_id, size, position)
        guessed = mimetypes.guess_type(path.name)[0] or ""
        media_type = "image/jpeg" if size == "thumb" else guessed if guessed.startswith("image/") else "application/octet-stream"
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/api/items/{item_id:path}/image", tags=["catalogue"], response_class=FileResponse,
             responses={**IMAGE_RESPONSE, **errors(400, 404, 422, 503)},
             summary="An item's main photo: a cached JPEG thumbnail or the original")
    async def item_image(item_id: str, size: Literal["thumb", "full"] = "thumb"):
        return await photo_response(item_id, size, 0)

    @app.get("/api/items/{item_id:path}/photos/{index}", tags=["catalogue"], response_class=FileResponse,
             responses={**IMAGE_RESPONSE, **errors(400, 404, 422, 503)},
             summary="One of a lot's photos (0 is the main one): a cached JPEG thumbnail or the original")
    async def item_photo(item_id: str, index: Annotated[int, Path(ge=0, le=10_000)], size: Literal["thumb", "full"] = "thumb"):
        return await photo_response(item_id, size, index)

    @app.post("/api/items/{item_id:path}/photos", response_model=ItemOut, tags=["catalogue"],
              dependencies=[Depends(require_token), Depends(multipart_only)],
              responses=errors(400, 401, 403, 404, 409, 413, 415, 422, 503),
              summary="Add photos to a lot, after the ones it has (bearer token)")
    async def add_photos(item_id: str, image: Annotated[list[UploadFile], File(description="One or more photos")]):
        photos = await uploads(image, settings.max_photos_per_lot)
        updated = await admission.run(lambda: run_in_threadpool(engine.add_photos, item_id, photos))
        return item_body(updated)

    @app.delete("/api/items/{item_id:path}/photos/{index}", response_model=ItemOut, tags=["catalogue"],
                dependencies=[Depends(require_token)], responses=errors(400, 401, 403, 404, 409, 422, 503),
                summary="Remove one photo of a lot, with its vectors (bearer token)")
    async def remove_photo(item_id: str, index: Annotated[int, Path(ge=0, le=10_000)]):
        return item_body(await run_in_threadpool(engine.remove_photo, item_id, index))

    @app.get("/api/items/{item_id:item_id}", response_model=ItemOut, tags=["catalogue"], responses=errors(404, 422, 503),
             summary="One item")
    async def get_item(item_id: str):
        return item_body(await run_in_threadpool(engine.get_item, item_id))

    @app.post("/api/items", status_code=201, response_model=ItemOut, tags=["catalogue"],
              dependencies=[Depends(require_token), Depends(multipart_only)],
              responses=errors(400, 401, 403, 409, 413, 415, 422, 503),
              summary="Add a lot with its photos (bearer token)")
    async def add_item(
        image: Annotated[list[UploadFile], File(description="The lot's photos, the main one first")],
        id: Annotated[str | None, Form(pattern=ITEM_ID_PATTERN, description="Unique id; a random one if left out")] = None,
        title: Annotated[str | None, Form(max_length=2000)] = None,
        category: Annotated[str | None, Form(max_length=512)] = None,
        price: Annotated[float | None, Form(allow_inf_nan=False, description="Hammer price")] = None,
        currency: Annotated[str | None, Form(max_length=16)] = None,
        sold_at: Annotated[str | None, Form(max_length=64, description="Date of sale, e.g. 2024-03-02")] = None,
        extra: Annotated[str | None, Form(max_length=100_000, description='Other fields as a JSON object: {"maker": "Thonet"}')] = None,
    ):
        item = Item(id=(id or "").strip() or uuid.uuid4().hex, title=_clean(title), category=_clean(category), price=price,
                    currency=_clean(currency), sold_at=_clean(sold_at), extra=_json_object(extra))
        photos = await uploads(image, settings.max_photos_per_lot)
        added = await admission.run(lambda: run_in_threadpool(engine.add_item, item, photos, False))
        return item_body(await run_in_threadpool(engine.get_item, added.id))

    @app.delete("/api/items/{item_id:item_id}", response_model=Removed, tags=["catalogue"],
                dependencies=[Depends(require_token)], responses=errors(401, 403, 404, 422, 503),
                summary="Remove an item (bearer token)")
    async def delete_item(item_id: str):
        if not await run_in_threadpool(engine.remove, [item_id]):
            raise LookalikeError(f"no item with id {item_id!r}", ErrorKind.NOT_FOUND)
        return {"removed": item_id}

    duplicate_scan = {"settings": None, "task": None, "checked": 0, "lots": 0}

    def scan_duplicates(neighbours: int, min_score: float) -> None:
        def total(count: int) -> None:
            duplicate_scan["lots"] = count

        def progress(count: int) -> None:
            duplicate_scan["checked"] += count

        engine.duplicates(neighbours, min_score, total, progress)

    @app.get("/api/duplicates", response_model=DuplicatesResponse, tags=["catalogue"],
             dependencies=[Depends(require_token)],
             responses={202: {"model": DuplicatesRunning, "description": "The check is running: ask again later "
                                                                          "(Retry-After)"},
                        **errors(400, 401, 403, 422, 503)},
             summary="Groups of lots that show the same object (bearer token)")
    async def find_duplicates(neighbours: Annotated[int, Query(ge=1, le=100)] = 5,
                              min_score: Annotated[float, Query(ge=-1, le=1)] = 0.75):
        """The check goes through every lot, so on a large catalogue it takes minutes (about 5 per 10,000 lots on 2
        cores): the first request starts it in the background and is answered 202; ask again until the report comes
        (200). A report is kept until the catalogue changes. One check runs at a time: 503 while another runs."""
        report = await run_in_threadpool(engine.cached_duplicates, neighbours, min_score)
        if report is not None:
            return report.to_dict()
        task = duplicate_scan["task"]
        if task is None or task.done():
            duplicate_scan.update(settings=(neighbours, min_score), checked=0, lots=0)
            duplicate_scan["task"] = asyncio.create_task(run_in_threadpool(scan_duplicates, neighbours, min_score))
            duplicate_scan["task"].add_done_callback(lambda done: done.cancelled() or done.exception())
        elif duplicate_scan["settings"] != (neighbours, min_score):
            raise LookalikeError("another duplicates check is running; ask again when it is done", ErrorKind.UNAVAILABLE)
        running = {"status": "running", "lots_checked": duplicate_scan["checked"], "lots": duplicate_scan["lots"]}
        return JSONResponse(running, status_code=202, headers={"Retry-After": "5"})

    @app.get("/api/health", response_model=Health, tags=["service"], responses=errors(503),
             summary="Liveness and catalogue size (503 while the store cannot be reached)")
    async def health():
        return {"status": "ok", "items": await run_in_threadpool(engine.count), "model_id": engine.model_id}

    @app.get("/metrics", include_in_schema=False)
    async def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(WEB_FOLDER / "index.html", headers={"Cache-Control": "no-cache"})

    _describe_files_for_swagger_ui(app)
    _serve_docs_offline(app)
    app.mount("/static", StaticFiles(directory=WEB_FOLDER), name="static")
    return BodySizeLimit(app, settings.max_upload_bytes)


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method served at this path's resource: each method is its own route, so the one that
    answered 405 knows only its own. The resource is the first path template that matches (an item
    id may hold slashes, so /api/items/x/image also fits /api/items/{item_id})."""
    matching = [route for route in app.router.routes
                if isinstance(route, APIRoute) and route.matches(request.scope)[0] != Match.NONE]
    methods = set().union(*(route.methods for route in matching if route.path == matching[0].path)) if matching else set()
    return sorted(methods | ({"HEAD"} if "GET" in methods else set()))


def _describe_files_for_swagger_ui(app: FastAPI) -> None:
    """Add ``format: binary`` beside OpenAPI 3.1's ``contentMediaType`` on uploaded files: Swagger UI shows a
    file picker for a list of files only then (and generators that predate 3.1 read it too)."""
    generate = app.openapi

    def mark(node) -> None:
        if isinstance(node, dict):
            if node.get("contentMediaType") == "application/octet-stream" and node.get("type") == "string":
                node["format"] = "binary"
            for value in node.values():
                mark(value)
        elif isinstance(node, list):
            for value in node:
                mark(value)

    def openapi() -> dict:
        if app.openapi_schema is None:
            mark(generate())
        return app.openapi_schema

    app.openapi = openapi


def _serve_docs_offline(app: FastAPI) -> None:
    """/docs with the Swagger UI (5.x, which reads OpenAPI 3.1) that the fastapi-offline package ships:
    FastAPI's default loads it from a CDN, which a server without internet cannot reach."""
    import fastapi_offline

    assets = pathlib.Path(fastapi_offline.__file__).parent / "static"
    app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="lookalike API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon.png")


def _warm(engine: Engine) -> None:
    try:
        engine.warm()
    except Exception:  # noqa: BLE001 - a search reads them again and reports what is wrong
        logging.getLogger(__name__).exception("could not read the filter columns and calibrate suggestions and price ranges")


def _clean(text: str | None) -> str | None:
    return text.strip() or None if text is not None else None


def _json_object(text: str | None) -> dict:
    if not text or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise LookalikeError("extra must be a JSON object", ErrorKind.INVALID) from None
    if not isinstance(value, dict):
        raise LookalikeError("extra must be a JSON object", ErrorKind.INVALID)
    return value
