"""The catalogue's own photo files: uploaded photos kept by content, and cached thumbnails."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

from PIL import Image

from lookalike.images import DecodeLimits, decode_image

THUMB_SIDE = 320


def _suffix_for(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return "." + (image.format or "img").lower().replace("jpeg", "jpg")
    except Exception:  # noqa: BLE001 - already decoded once; the suffix is cosmetic
        return ".img"


def _temporary_beside(target: Path) -> Path:
    return target.with_suffix(target.suffix + f".tmp-{os.getpid()}-{threading.get_ident()}")


def store_copy(catalog_dir: Path, data: bytes) -> Path:
    """Write an uploaded photo under images/, named by its content, synced to disk."""
    folder = catalog_dir / "images"
    folder.mkdir(exist_ok=True)
    target = folder / f"{hashlib.sha256(data).hexdigest()[:32]}{_suffix_for(data)}"
    if not target.exists():
        temporary = _temporary_beside(target)
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    return target


def thumbnail(catalog_dir: Path, photo: Path, limits: DecodeLimits) -> Path:
    """A JPEG of at most THUMB_SIDE pixels a side, made once and cached under thumbs/."""
    stat = photo.stat()
    name = hashlib.sha256(f"{photo}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:32]
    target = catalog_dir / "thumbs" / f"{name}.jpg"
    if not target.exists():
        target.parent.mkdir(exist_ok=True)
        image = decode_image(photo, target_size=THUMB_SIDE, limits=limits)
        image.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
        temporary = _temporary_beside(target)
        image.save(temporary, "JPEG", quality=85)
        os.replace(temporary, target)
    return target
