"""Turn files or bytes into clean RGB images, or a clear reason why not.

Every decode is bounded: a pixel-count limit guards against decompression
bombs, and big JPEGs are decoded at reduced scale through ``Image.draft``.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from lookalike.errors import ErrorKind, LookalikeError

try:  # HEIC/HEIF/AVIF from phones; optional.
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - depends on the install
    pass

DEFAULT_MAX_PIXELS = 64_000_000
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jfif"}
)

ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageDecodeError(LookalikeError, ValueError):
    """The input is not an image we can use; the message says why in one line."""

    default_kind = ErrorKind.INVALID


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = 200 * 1024 * 1024


def _source_bytes(source: str | os.PathLike | bytes, limits: DecodeLimits) -> io.BytesIO:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            status = path.stat()
            if stat.S_ISDIR(status.st_mode):
                raise IsADirectoryError
            if not stat.S_ISREG(status.st_mode):
                # A named pipe or device would block the read or never end.
                raise ImageDecodeError("not a regular file")
            size = status.st_size
            if size > limits.max_bytes:
                raise ImageDecodeError(f"file is {size} bytes, over the {limits.max_bytes} byte limit", ErrorKind.TOO_LARGE)
            data = path.read_bytes()
        except IsADirectoryError:
            raise ImageDecodeError("is a directory, not an image") from None
        except PermissionError:
            raise ImageDecodeError("permission denied") from None
        except FileNotFoundError:
            raise ImageDecodeError("no such file") from None
        except OSError as error:
            raise ImageDecodeError(f"cannot read file: {error.strerror or error}") from None
    if not data:
        raise ImageDecodeError("empty file")
    if len(data) > limits.max_bytes:
        raise ImageDecodeError(f"{len(data)} bytes, over the {limits.max_bytes} byte limit", ErrorKind.TOO_LARGE)
    return io.BytesIO(data)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Flatten any mode onto a white background as 8-bit RGB."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping to white.
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        high = float(array.max()) or 1.0
        scale = 255.0 / (65535.0 if high > 255 else 255.0)
        image = Image.fromarray(np.clip(array * scale, 0, 255).astype("uint8"), "L")
    if image.mode == "F":
        image = image.convert("L")
    if image.mode in ("LA", "La", "PA"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "RGBa"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def decode_image(
    source: str | os.PathLike | bytes,
    *,
    target_size: int | None = None,
    limits: DecodeLimits = DecodeLimits(),
) -> Image.Image:
    """Decode ``source`` into an RGB image with EXIF orientation applied.

    ``target_size`` is the smallest side the caller needs; JPEGs larger than
    that are decoded at a reduced scale, which is several times faster.
    Raises ImageDecodeError with a one-line reason for anything unusable.
    """
    buffer = _source_bytes(source, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(buffer)
            width, height = image.size
            if width <= 0 or height <= 0:
                raise ImageDecodeError("image has no pixels")
            if width * height > limits.max_pixels:
                raise ImageDecodeError(
                    f"image is {width}x{height}, over the {limits.max_pixels} pixel limit"
                )
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
            if target_size and image.format == "JPEG":
                image.draft("RGB", (target_size, target_size))
            image.load()
            image = ImageOps.exif_transpose(image) or image
            return _to_rgb(image)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image, or a format Pillow cannot read", ErrorKind.UNSUPPORTED_MEDIA) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageDecodeError("image is too large (decompression bomb guard)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as error:
        raise ImageDecodeError(f"corrupt or truncated image: {str(error).splitlines()[0][:200]}") from None
    except MemoryError:
        raise ImageDecodeError("image needs too much memory to decode") from None


def looks_like_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES
