"""Image input: every kind of photo decodes to clean RGB, bad files fail with a reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
from PIL import Image

from lookalike.images import DecodeLimits, ImageDecodeError, decode_image


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(skimage.data.astronaut())


def test_exif_orientation_is_applied(astronaut):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = encode(astronaut.resize((300, 200)), "JPEG", exif=exif.tobytes())
    assert decode_image(data).size == (200, 300)


def test_alpha_is_composited_on_white():
    cutout = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    cutout.paste((255, 0, 0, 255), (0, 0, 5, 10))
    decoded = np.asarray(decode_image(encode(cutout, "PNG")))
    assert tuple(decoded[5, 2]) == (255, 0, 0)
    assert tuple(decoded[5, 8]) == (255, 255, 255)


def test_palette_with_transparency_becomes_white():
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    data = encode(image, "PNG", transparency=1)
    assert tuple(np.asarray(decode_image(data))[0, 0]) == (255, 255, 255)


def test_cmyk_jpeg_decodes_to_rgb(astronaut):
    decoded = decode_image(encode(astronaut.convert("CMYK"), "JPEG"))
    assert decoded.mode == "RGB" and decoded.size == astronaut.size
    assert np.abs(np.asarray(decoded, float) - np.asarray(astronaut, float)).mean() < 20


def test_sixteen_bit_greyscale_keeps_its_contrast():
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    decoded = np.asarray(decode_image(encode(Image.fromarray(ramp), "PNG")))
    assert decoded.shape == (64, 64, 3)
    assert decoded.min() < 10 and decoded.max() > 245


def test_greyscale_becomes_three_channels():
    decoded = decode_image(encode(Image.fromarray(skimage.data.camera()), "PNG"))
    assert decoded.mode == "RGB"


def test_large_jpeg_is_decoded_at_reduced_scale(astronaut):
    big = astronaut.resize((2000, 1334))
    decoded = decode_image(encode(big, "JPEG"), target_size=256)
    assert 256 <= min(decoded.size) < 1334
    assert decoded.size[0] / decoded.size[1] == pytest.approx(2000 / 1334, rel=0.01)


def test_first_frame_of_animation():
    frames = [Image.new("RGB", (8, 8), color) for color in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    assert tuple(np.asarray(decode_image(buffer.getvalue()))[0, 0])[0] > 200


def test_pixel_limit_refuses_decompression_bombs():
    bomb = encode(Image.new("L", (5000, 5000)), "PNG")
    with pytest.raises(ImageDecodeError, match="pixel limit"):
        decode_image(bomb, limits=DecodeLimits(max_pixels=1_000_000))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"<html><body>not a photo</body></html>", "not an image"),
        (encode(Image.new("RGB", (64, 64)), "JPEG")[:200], "corrupt or truncated"),
        (encode(Image.new("RGB", (64, 64)), "PNG")[:60], "corrupt or truncated"),
    ],
    ids=["empty", "html", "truncated-jpeg", "truncated-png"],
)
def test_bad_input_fails_with_a_reason(data, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        decode_image(data)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageDecodeError, match="no such file"):
        decode_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageDecodeError, match="directory"):
        decode_image(tmp_path)
