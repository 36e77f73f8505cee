"""Fuzzing the decode and upload paths with hypothesis: mutated real images
(truncated, bit-flipped, spliced, with bytes inserted) and random bodies. A
decode returns an RGB image within the pixel limit or raises ImageDecodeError,
within a time bound; the server answers 200 or a 4xx with a JSON error, never a
5xx, and stays up.

Bounded for CI; run longer with LOOKALIKE_FUZZ_EXAMPLES=20000.
"""

from __future__ import annotations

import io
import os
import time

import httpx
import numpy as np
import pytest
import skimage.data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lookalike.images import DecodeLimits, ImageDecodeError, decode_image

EXAMPLES = int(os.environ.get("LOOKALIKE_FUZZ_EXAMPLES", "300"))
LONG_EXAMPLES = 10 * EXAMPLES  # the slow tier's long fuzz
UPLOAD_EXAMPLES = max(50, EXAMPLES // 3)
LIMITS = DecodeLimits(max_pixels=4_000_000)
DECODE_SECONDS = 5.0


def _encoded(fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).resize((96, 64)).save(buffer, fmt, **options)
    return buffer.getvalue()


SEEDS = [_encoded("JPEG", quality=80), _encoded("JPEG", progressive=True), _encoded("PNG"), _encoded("GIF"),
         _encoded("WEBP"), _encoded("TIFF"), _encoded("BMP")]


@st.composite
def mutated_images(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        operation = draw(st.sampled_from(["flip", "truncate", "insert", "splice", "header"]))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if operation == "flip" and data:
            data[position] ^= draw(st.integers(1, 255))
        elif operation == "truncate":
            del data[position:]
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        elif operation == "splice":
            other = draw(st.sampled_from(SEEDS))
            data[position:] = other[draw(st.integers(0, len(other) - 1)):]
        else:  # rewrite bytes inside the header, where sizes and counts live
            start = draw(st.integers(0, min(40, max(0, len(data) - 1))))
            data[start : start + 4] = draw(st.binary(min_size=4, max_size=4))
    return bytes(data)


def check_decode(data: bytes) -> None:
    started = time.perf_counter()
    try:
        image = decode_image(data, limits=LIMITS, target_size=256)
    except ImageDecodeError as error:
        assert str(error) and "\n" not in str(error)
    else:
        assert image.mode == "RGB" and image.width * image.height <= LIMITS.max_pixels
        np.asarray(image)  # the pixels really are there
    assert time.perf_counter() - started < DECODE_SECONDS


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_images())
def test_mutated_images_decode_or_fail_cleanly(data):
    check_decode(data)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_decode_or_fail_cleanly(data):
    check_decode(data)


@pytest.mark.slow
@settings(max_examples=LONG_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated_images(), st.binary(max_size=8192)))
def test_long_fuzz_of_decoding(data):
    check_decode(data)


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as http:
        yield http


@settings(max_examples=UPLOAD_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(mutated_images(), st.binary(max_size=4096)), name=st.text(max_size=40),
       content_type=st.sampled_from(["image/jpeg", "application/octet-stream", "text/plain", ""]))
def test_uploads_never_5xx(client, server, data, name, content_type):
    files = {"image": (name or "x", data, content_type) if content_type else (name or "x", data)}
    response = client.post("/api/search", params={"k": 3}, files=files)
    assert response.status_code in (200, 413, 415, 422), response.text
    assert response.headers["content-type"].startswith("application/json")
    if response.status_code != 200:
        assert set(response.json()) == {"error"}
    assert server.alive()


@settings(max_examples=UPLOAD_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.binary(max_size=512), st.text(max_size=200).map(str.encode),
                      st.dictionaries(st.sampled_from(["item_id", "url", "text", "k"]),
                                      st.one_of(st.text(max_size=60), st.integers(), st.none(), st.lists(st.integers())),
                                      max_size=3).map(lambda value: __import__("json").dumps(value).encode())),
       k=st.one_of(st.integers(-5, 500), st.text(max_size=5)), category=st.text(max_size=30),
       path=st.sampled_from(["/api/search/item", "/api/search/url", "/api/search"]))
def test_json_bodies_and_parameters_never_5xx(client, server, body, k, category, path):
    response = client.post(path, params={"k": k, "category": category}, content=body,
                           headers={"Content-Type": "application/json"})
    assert response.status_code < 500, response.text
    assert server.alive()
