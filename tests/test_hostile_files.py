"""Hostile and odd files: a corpus of 40 kinds, generated here from a real photo,
fed to the real CLI and to the real server. Every file is either indexed
correctly or skipped and reported in one line (CLI) / refused with a 4xx and a
JSON error (API); the server stays up; rejected input changes nothing."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pillow_heif
import pytest
import skimage.data
from PIL import Image

from tests.conftest import TOKEN, run_cli

AUTH = {"Authorization": f"Bearer {TOKEN}"}
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with almost no data behind it."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b"")


def build_corpus(folder: Path) -> tuple[dict[str, bytes], set[str], set[str]]:
    """Writes the corpus; returns (uploadable files by name, names that must be indexed, names that must be skipped)."""
    photo = Image.fromarray(skimage.data.astronaut()).resize((320, 320))
    jpeg = save(photo, "JPEG", quality=90)
    png = save(photo, "PNG")
    frames = [photo.rotate(angle) for angle in (0, 20, 40)]
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    huge_exif = Image.Exif()
    huge_exif[0x9286] = "x" * 60000  # UserComment
    heic = io.BytesIO()
    pillow_heif.from_pillow(photo).save(heic, quality=80)
    good = {
        "exif-rotated.jpg": save(photo, "JPEG", exif=exif.tobytes()),
        "cmyk.jpg": save(photo.convert("CMYK"), "JPEG"),
        "sixteen-bit.png": save(Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257), "PNG"),
        "palette-transparency.png": save(photo.convert("P", palette=Image.Palette.ADAPTIVE), "PNG", transparency=0),
        "animated.gif": save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100),
        "animated.webp": save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100),
        "multi-page.tiff": save(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
        "photo.heic": heic.getvalue(),
        "one-pixel.png": save(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"),
        "huge-exif.jpg": save(photo, "JPEG", exif=huge_exif.tobytes()),
        "png-named.jpg": png,
        "jpeg-named.png": jpeg,
        "ünïcödé 名前 фото.jpg": jpeg,
        "     spaces     .jpg": jpeg,
        "grey-alpha.png": save(photo.convert("LA"), "PNG"),
        "one-bit.png": save(photo.convert("1"), "PNG"),
        "float.tiff": save(Image.fromarray(np.asarray(photo.convert("L"), np.float32) / 255), "TIFF"),
        "strip-1x10000.png": save(Image.new("RGB", (1, 10000), (20, 90, 160)), "PNG"),
        "strip-10000x2.png": save(Image.new("RGB", (10000, 2), (160, 90, 20)), "PNG"),
        "progressive.jpg": save(photo, "JPEG", progressive=True),
        "trailing-garbage.jpg": jpeg + os.urandom(5000),
        "lossless.webp": save(photo.convert("RGBA"), "WEBP", lossless=True),
        "bitmap.bmp": save(photo, "BMP"),
        "grey.jpg": save(photo.convert("L"), "JPEG"),
        "jpeg2000-named.jpg": save(photo, "JPEG2000"),
    }
    bad = {
        "truncated.jpg": jpeg[: len(jpeg) // 3],
        "truncated.png": png[: len(png) // 3],
        "zero-bytes.jpg": b"",
        "text.jpg": b"just some text, not a photo\n" * 10,
        "page.jpg": b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>",
        "drawing.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><circle r="40"/></svg>',
        "bomb.png": save(Image.new("1", (20000, 20000)), "PNG"),
        "header-30000x30000.png": png_claiming(30000, 30000),
        "document.jpg": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
        "only-soi.jpg": b"\xff\xd8",
        "random-bytes.jpg": os.urandom(4096),
        "bad-crc.png": png[:40] + bytes([png[40] ^ 0xFF]) + png[41:],
        "new\nline.jpg": b"text behind a name with a newline",
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in {**good, **bad}.items():
        (folder / name).write_bytes(data)
    (folder / "nested" / "deeper").mkdir(parents=True)
    (folder / "nested" / "deeper" / "inside.jpg").write_bytes(jpeg)
    good_names = {*good, "nested/deeper/inside.jpg"}
    # Things that are not plain files.
    (folder / "loop-a.jpg").symlink_to(folder / "loop-b.jpg")
    (folder / "loop-b.jpg").symlink_to(folder / "loop-a.jpg")
    (folder / "dangling.jpg").symlink_to(folder / "no-such-file.jpg")
    (folder / "nested" / "back-up").symlink_to(folder, target_is_directory=True)  # a folder loop: not followed
    (folder / "folder-named.jpg").mkdir()
    os.mkfifo(folder / "named-pipe.jpg")  # reading it would block forever
    unreadable = folder / "unreadable.jpg"
    unreadable.write_bytes(jpeg)
    unreadable.chmod(0)
    skipped_names = {*bad, "loop-a.jpg", "loop-b.jpg", "dangling.jpg", "named-pipe.jpg"}
    # root reads a mode-000 file anyway; everyone else must see it skipped.
    (good_names if IS_ROOT else skipped_names).add("unreadable.jpg")
    uploadable = {**good, **bad}
    return uploadable, good_names, skipped_names


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile") / "corpus"
    uploadable, good, skipped = build_corpus(folder)
    yield folder, uploadable, good, skipped
    (folder / "unreadable.jpg").chmod(0o644)


def test_corpus_has_at_least_30_kinds(corpus):
    _, uploadable, good, skipped = corpus
    assert len(good) + len(skipped) >= 40 and len(uploadable) >= 35


def test_cli_indexes_the_good_and_reports_each_bad_file_in_one_line(tmp_path, corpus):
    folder, _, good, skipped = corpus
    catalog = str(tmp_path / "catalog")
    result = run_cli("--catalog", catalog, "index", str(folder), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("skipped ")]
    reported = {line[len("skipped "):].split(": ")[0].replace("\\x0a", "\n") for line in lines}
    assert reported == {str(folder / name) for name in skipped}, "\n".join(lines)
    assert f"embedded {len(good)} images" in result.stdout and f"{len(skipped)} skipped" in result.stdout

    info = json.loads(run_cli("--catalog", catalog, "info", "--json").stdout)
    assert info["items"] == len(good)
    listed = run_cli("--catalog", catalog, "search", str(folder / "progressive.jpg"), "-k", "100", "--json")
    assert {hit["id"] for hit in json.loads(listed.stdout)["results"]} == good
    check = run_cli("--catalog", catalog, "check")
    assert check.returncode == 0, check.stdout

    # Every file as a query: the good ones answer, the bad ones fail in one line each, the rest still answer.
    queries = sorted(str(folder / name) for name in good | skipped)
    searched = run_cli("--catalog", catalog, "--query-mode", "single", "search", *queries, "--json", "-k", "1")
    assert searched.returncode == 1
    answered = [json.loads(line)["query"] for line in searched.stdout.splitlines()]
    assert len(answered) == len(good)
    errors = [line for line in searched.stderr.splitlines() if line.startswith("lookalike: error:")]
    assert len(errors) == len(skipped) == len(searched.stderr.splitlines())


def test_api_answers_every_file_with_200_or_a_4xx_json_error(server, corpus):
    _, uploadable, good, _ = corpus
    with httpx.Client(base_url=server.url, timeout=120) as client:
        items_before = client.get("/api/health").json()["items"]
        statuses = {}
        for name, data in uploadable.items():
            response = client.post("/api/search", params={"k": 3}, files={"image": (name, data)})
            statuses[name] = response.status_code
            if name in good:
                assert response.status_code == 200, (name, response.text)
                assert response.json()["results"], name
            else:
                assert response.status_code in (413, 415, 422), (name, response.status_code, response.text)
                assert set(response.json()) == {"error"} and "Traceback" not in response.text, name
            assert server.alive(), f"server died on {name}"

        # Adding: the bad files are refused and leave the catalogue as it was.
        for name, data in uploadable.items():
            if name in good:
                continue
            response = client.post("/api/items", headers=AUTH, files={"image": (name, data)}, data={"id": f"hostile/{name}"})
            assert response.status_code in (413, 415, 422), (name, response.status_code)
            assert client.get(f"/api/items/{quote(f'hostile/{name}', safe='/')}").status_code == 404
        assert client.get("/api/health").json()["items"] == items_before
        assert server.alive()
    print(f"{len(statuses)} uploads: " + ", ".join(f"{status}: {list(statuses.values()).count(status)}"
                                                   for status in sorted(set(statuses.values()))))
