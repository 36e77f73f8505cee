"""Images in: decode and validate photos before anything else sees them."""

from lookalike.images.decode import (
    IMAGE_SUFFIXES,
    DecodeLimits,
    ImageDecodeError,
    decode_image,
    looks_like_image_file,
)

__all__ = ["IMAGE_SUFFIXES", "DecodeLimits", "ImageDecodeError", "decode_image", "looks_like_image_file"]
