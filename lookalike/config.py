"""One configuration object for everything lookalike runs with, built once.

The environment is read here and nowhere else: ``Settings.from_environment()``
takes the ``LOOKALIKE_*`` variables, and the CLI lays its options over them.
The engine, the API and the encoders get what they need from a ``Settings``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_MAX_PIXELS = 64_000_000
DEFAULT_MAX_UPLOAD_MB = 20.0


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _number(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


def model_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where exported and quantised models are kept (``LOOKALIKE_CACHE``, else ~/.cache/lookalike)."""
    environ = os.environ if environ is None else environ
    root = environ.get("LOOKALIKE_CACHE") or Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lookalike"
    return Path(root)


@dataclass(frozen=True)
class Settings:
    #: The catalogue folder (SQLite file, index folder, uploaded photos, thumbnails).
    catalog: Path = Path("catalog")
    #: The encoder spec; None means the catalogue's own model, else the default one.
    model: str | None = None
    index: str = "auto"
    index_options: Mapping[str, object] = field(default_factory=dict)
    query_mode: str = "crops"
    #: Photos a lot may have, and photos one query (one new item) may have.
    max_photos_per_lot: int = 50
    max_query_photos: int = 10
    #: How many of a search's best lots are checked with local features (0 switches it off).
    verify_top: int = 10
    #: The server's embedding work: searches and adds running at once (0: one per CPU core) and waiting (-1: twice
    #: that); beyond, a request is refused at once with 503 and Retry-After.
    search_workers: int = 0
    search_queue: int = -1
    #: The share of hammer prices a price range should hold (calibrated on the catalogue's own sales).
    price_level: float = 0.8
    #: How often, leave-one-out, a suggested attribute must be right for that field to be suggested.
    suggest_accuracy: float = 0.9
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1024 * 1024)
    #: The catalogue's store: None for SQLite in the catalogue folder, or a postgresql:// URL that several servers
    #: share (the folder then keeps only the saved index and uploaded photos).
    store: str | None = None
    #: With ``index="milvus"``: a server URI (http://host:19530) or a Milvus Lite file; None = milvus.db in the catalogue.
    milvus_uri: str | None = None
    milvus_token: str | None = None
    cache_dir: Path = field(default_factory=model_cache_dir)
    #: Bearer token that enables writes through the API; None switches writes off.
    api_token: str | None = None
    allow_private_urls: bool = False
    cors_origins: tuple[str, ...] = ()
    #: Folder of tuxpaint stamps for the demo, when not in the usual places.
    stamps_dir: Path | None = None
    debug: bool = False

    def __post_init__(self) -> None:
        if self.search_workers <= 0:
            object.__setattr__(self, "search_workers", max(1, os.cpu_count() or 1))
        if self.search_queue < 0:
            object.__setattr__(self, "search_queue", 2 * self.search_workers)
        if not 0.5 <= self.price_level <= 0.99:
            raise ValueError(f"the price range level must be from 0.5 to 0.99 (LOOKALIKE_PRICE_LEVEL), not {self.price_level}")
        if not 0.5 <= self.suggest_accuracy <= 1:
            raise ValueError("the suggestion accuracy must be from 0.5 to 1 (LOOKALIKE_SUGGEST_ACCURACY), "
                             f"not {self.suggest_accuracy}")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, **overrides) -> Settings:
        environ = os.environ if environ is None else environ
        origins = environ.get("LOOKALIKE_CORS_ORIGINS", "")
        settings = cls(
            catalog=Path(environ.get("LOOKALIKE_CATALOG") or "catalog"),
            max_pixels=int(_number(environ, "LOOKALIKE_MAX_PIXELS", DEFAULT_MAX_PIXELS)),
            max_upload_bytes=int(_number(environ, "LOOKALIKE_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB) * 1024 * 1024),
            store=environ.get("LOOKALIKE_STORE") or None,
            milvus_uri=environ.get("LOOKALIKE_MILVUS_URI") or None,
            milvus_token=environ.get("LOOKALIKE_MILVUS_TOKEN") or None,
            cache_dir=model_cache_dir(environ),
            api_token=environ.get("LOOKALIKE_API_TOKEN") or None,
            allow_private_urls=_flag(environ.get("LOOKALIKE_ALLOW_PRIVATE_URLS")),
            cors_origins=tuple(origin.strip() for origin in origins.split(",") if origin.strip()),
            stamps_dir=Path(environ["LOOKALIKE_STAMPS"]) if environ.get("LOOKALIKE_STAMPS") else None,
            debug=_flag(environ.get("LOOKALIKE_DEBUG")),
            verify_top=int(_number(environ, "LOOKALIKE_VERIFY_TOP", 10)),
            price_level=_number(environ, "LOOKALIKE_PRICE_LEVEL", 0.8),
            suggest_accuracy=_number(environ, "LOOKALIKE_SUGGEST_ACCURACY", 0.9),
            search_workers=int(_number(environ, "LOOKALIKE_SEARCH_WORKERS", 0)),
            search_queue=int(_number(environ, "LOOKALIKE_SEARCH_QUEUE", -1)),
        )
        return settings.with_(**overrides)

    def with_(self, **changes) -> Settings:
        """A copy with some fields changed; ``None`` values leave a field as it is."""
        changes = {name: value for name, value in changes.items() if value is not None}
        if "catalog" in changes:
            changes["catalog"] = Path(changes["catalog"])
        return replace(self, **changes)


__all__ = ["Settings", "model_cache_dir"]
