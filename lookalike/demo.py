"""The bundled demo: a catalogue built from real photos that Debian packages ship.

Items are the ~440 object cut-outs of ``tuxpaint-stamps-default`` (animals,
food, clothes, tools, vehicles, ...) composited on white, as a catalogue
photographer would shoot them. Their prices are GENERATED (a base per
category times seeded noise) and marked as such. "Phone photos" of items are
made by putting a cut-out on a real photo background, scaled, rotated,
colour-shifted and JPEG-compressed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

SKIPPED_FOLDERS = {"symbols", "cartoon"}
REPO_DATA = Path(__file__).resolve().parents[1] / "data"
#: Where the setup unpacks the Debian packages: beside the package in a checkout, or in the current folder (an
#: installed wheel run from a checkout); else where Debian installs them.
SETUP_DATA = (REPO_DATA / "debs", Path("data/debs").resolve())
STAMP_LOCATIONS = (*(data / "usr/share/tuxpaint/stamps" for data in SETUP_DATA), Path("/usr/share/tuxpaint/stamps"))
OPENCV_LOCATIONS = (*(data / "usr/share/doc/opencv-doc/examples/data" for data in SETUP_DATA),
                    Path("/usr/share/doc/opencv-doc/examples/data"))
BACKGROUND_PHOTOS = ("building.jpg", "home.jpg", "fruits.jpg", "baboon.jpg", "lena.jpg", "messi5.jpg", "orange.jpg",
                     "board.jpg", "apple.jpg", "left01.jpg", "aero3.jpg", "starry_night.jpg")
SKIMAGE_BACKGROUNDS = ("brick", "grass", "gravel", "coffee", "astronaut", "rocket", "chelsea", "cell", "immunohistochemistry")

#: Typical hammer prices per category for the generated demo prices.
BASE_PRICES = {
    "animals": 120.0, "clothes": 45.0, "food": 25.0, "hobbies": 180.0, "household": 60.0, "medical": 90.0,
    "military": 300.0, "naturalforces": 75.0, "people": 150.0, "plants": 35.0, "seasonal": 40.0, "space": 400.0,
    "sports": 70.0, "town": 250.0, "vehicles": 500.0,
}


class DemoDataMissing(RuntimeError):
    pass


@dataclass
class Stamp:
    path: Path
    category: str
    subcategory: str
    title: str

    @property
    def id(self) -> str:
        return f"{self.category}/{self.subcategory}/{self.path.stem}" if self.subcategory else f"{self.category}/{self.path.stem}"


def find_stamps_root(stamps_dir: Path | None = None) -> Path:
    """``stamps_dir`` (Settings.stamps_dir, env LOOKALIKE_STAMPS), else the setup's and Debian's locations."""
    if stamps_dir is None:
        from lookalike.config import Settings

        stamps_dir = Settings.from_environment().stamps_dir
    for candidate in [*([stamps_dir] if stamps_dir else []), *STAMP_LOCATIONS]:
        if candidate.is_dir():
            return candidate
    raise DemoDataMissing(
        "the demo photos (Debian package tuxpaint-stamps-default) are not installed: run `make setup` "
        "or set LOOKALIKE_STAMPS to a tuxpaint stamps folder"
    )


def _title(png: Path) -> str:
    description = png.with_suffix(".txt")
    if description.exists():
        first = description.read_text(encoding="utf-8", errors="replace").splitlines()[:1]
        if first and first[0].strip():
            # The first sentence, without quote marks: "“Stop” sign. Stop here, ..." -> "Stop sign"
            text = re.split(r"[.!?;:](?:\s|$)", first[0].strip())[0]
            text = re.sub("[\u201c\u201d\"]", "", text).strip()
            for article in ("A ", "An ", "The ", "Some "):
                if text.startswith(article):
                    text = text[len(article):]
                    break
            return text[:1].upper() + text[1:]
    return png.stem.replace("_", " ").replace("-", " ").strip().capitalize()


def list_stamps(root: Path | None = None) -> list[Stamp]:
    root = root or find_stamps_root()
    stamps = []
    for png in sorted(root.rglob("*.png")):
        parts = png.relative_to(root).parts
        if SKIPPED_FOLDERS.intersection(parts[:-1]) or len(parts) < 2:
            continue
        subcategory = parts[1] if len(parts) > 2 else ""
        stamps.append(Stamp(png, parts[0], subcategory, _title(png)))
    return stamps


def load_cutout(stamp: Stamp, max_side: int = 480) -> Image.Image:
    image = Image.open(stamp.path).convert("RGBA")
    box = image.getchannel("A").getbbox()
    if box:
        image = image.crop(box)
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def on_white(cutout: Image.Image, margin: float = 0.08) -> Image.Image:
    """The catalogue shot: the object centred on a white square."""
    side = int(max(cutout.size) * (1 + 2 * margin))
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(cutout, ((side - cutout.width) // 2, (side - cutout.height) // 2), cutout)
    return canvas


def generated_price(stamp: Stamp) -> float:
    """A seeded, plausible hammer price: category base, subcategory factor, item noise."""
    def unit(text: str) -> float:
        return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    base = BASE_PRICES.get(stamp.category, 80.0)
    subcategory_factor = float(np.exp((unit("sub:" + stamp.subcategory) - 0.5) * 1.6)) if stamp.subcategory else 1.0
    item_noise = float(np.exp((unit("item:" + stamp.id) - 0.5) * 0.8))
    return round(base * subcategory_factor * item_noise, 0)


def build_demo_catalogue_folder(destination: Path, stamps: list[Stamp] | None = None) -> Path:
    """Write catalogue photos and a metadata.csv under ``destination``; returns the CSV path."""
    stamps = stamps if stamps is not None else list_stamps()
    photos = destination / "photos"
    metadata = destination / "metadata.csv"
    rows = []
    for stamp in stamps:
        target = photos / f"{stamp.id}.jpg"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            on_white(load_cutout(stamp)).save(target, "JPEG", quality=90)
        rows.append({
            "id": stamp.id, "image": target.relative_to(destination).as_posix(), "title": stamp.title,
            "category": stamp.category, "price": f"{generated_price(stamp):.0f}", "currency": "EUR",
            "subcategory": stamp.subcategory, "price_source": "generated for the demo",
        })
    with open(metadata, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return metadata


def backgrounds() -> list[Image.Image]:
    """Real photos to stand in for the table or floor a phone photo is taken on."""
    found = []
    for folder in OPENCV_LOCATIONS:
        if folder.is_dir():
            found += [Image.open(folder / name).convert("RGB") for name in BACKGROUND_PHOTOS if (folder / name).exists()]
            break
    try:
        import skimage.data

        for name in SKIMAGE_BACKGROUNDS:
            array = getattr(skimage.data, name)()
            if array.ndim == 2:
                array = np.stack([array] * 3, axis=-1)
            found.append(Image.fromarray(np.asarray(array)[..., :3].astype("uint8")))
    except ImportError:
        pass
    if not found:
        raise DemoDataMissing("no background photos: install opencv-doc data (make setup) or scikit-image")
    return found


def perspective_coefficients(target: np.ndarray, source: np.ndarray) -> list[float]:
    """PIL PERSPECTIVE coefficients mapping output corners ``target`` to input corners ``source`` (4x2 each)."""
    rows = []
    for (x, y), (u, v) in zip(target, source):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return np.linalg.solve(np.asarray(rows, np.float64), source.reshape(8)).tolist()


def tilt(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    """The object seen from a little off-axis: each corner moved by up to ``strength`` of the side."""
    width, height = image.size
    corners = np.asarray([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    moved = corners + rng.uniform(-strength, strength, size=(4, 2)) * [width, height]
    moved -= moved.min(axis=0)
    size = tuple(int(value) + 1 for value in moved.max(axis=0))
    coefficients = perspective_coefficients(moved, corners)
    return image.transform(size, Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BICUBIC)


def make_phone_photo(cutout: Image.Image, background: Image.Image, rng: np.random.Generator,
                     output_side: int = 640, jpeg_quality: int = 60, perspective: float = 0.0,
                     occlusion: float = 0.0, light_gradient: bool = False) -> bytes:
    """A new photo of the same object: other background, scale 0.5-0.9, rotation
    up to 15 degrees, colour and light shift, slight blur, JPEG compression;
    optionally a perspective tilt (corners moved by up to ``perspective`` of the
    side), an occluder covering up to ``occlusion`` of the object, and uneven light."""
    side = output_side
    scale = rng.uniform(0.5, 0.9)
    bg_scale = side / min(background.size) * rng.uniform(1.0, 1.6)
    bg = background.resize((max(side, int(background.width * bg_scale)), max(side, int(background.height * bg_scale))))
    left = int(rng.integers(0, bg.width - side + 1))
    top = int(rng.integers(0, bg.height - side + 1))
    canvas = bg.crop((left, top, left + side, top + side))
    item = cutout.convert("RGBA")
    if perspective:
        item = tilt(item, perspective, rng)
    item = item.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BICUBIC, expand=True)
    fit = scale * side / max(item.size)
    item = item.resize((max(1, int(item.width * fit)), max(1, int(item.height * fit))), Image.Resampling.BICUBIC)
    x = int(rng.integers(0, side - item.width + 1))
    y = int(rng.integers(0, side - item.height + 1))
    canvas.paste(item, (x, y), item)
    if occlusion:
        # A hand or another object over one edge of the item: a patch of the background photo.
        share = float(rng.uniform(occlusion / 2, occlusion))
        cover_w, cover_h = (int(item.width * share), item.height) if rng.random() < 0.5 else (item.width, int(item.height * share))
        cover_x = x if rng.random() < 0.5 else x + item.width - cover_w
        cover_y = y if rng.random() < 0.5 else y + item.height - cover_h
        patch_x = int(rng.integers(0, bg.width - cover_w + 1))
        patch_y = int(rng.integers(0, bg.height - cover_h + 1))
        canvas.paste(bg.crop((patch_x, patch_y, patch_x + cover_w, patch_y + cover_h)), (cover_x, cover_y))
    canvas = ImageEnhance.Brightness(canvas).enhance(float(rng.uniform(0.8, 1.2)))
    canvas = ImageEnhance.Color(canvas).enhance(float(rng.uniform(0.8, 1.2)))
    tint = np.asarray(canvas, np.float32) * rng.uniform(0.92, 1.08, size=3)
    if light_gradient:
        direction = rng.normal(size=2)
        direction /= np.linalg.norm(direction) + 1e-9
        ys, xs = np.mgrid[0:side, 0:side] / side - 0.5
        tint *= (1.0 + float(rng.uniform(0.15, 0.4)) * (xs * direction[0] + ys * direction[1]))[..., None]
    canvas = Image.fromarray(np.clip(tint, 0, 255).astype("uint8"))
    canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.0))))
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=jpeg_quality)
    return buffer.getvalue()


def make_demo_queries(stamps: list[Stamp], destination: Path, count: int, seed: int = 7) -> list[tuple[Stamp, Path]]:
    """Write ``count`` new "phone photos" of catalogue items under ``destination``."""
    rng = np.random.default_rng(seed)
    pool = backgrounds()
    destination.mkdir(parents=True, exist_ok=True)
    chosen = rng.choice(len(stamps), size=min(count, len(stamps)), replace=False)
    queries = []
    for index in chosen:
        stamp = stamps[int(index)]
        path = destination / f"phone-photo-of-{stamp.path.stem}.jpg"
        path.write_bytes(make_phone_photo(load_cutout(stamp), pool[int(rng.integers(len(pool)))], rng))
        queries.append((stamp, path))
    return queries


def run_demo(engine, query_count: int, show_result, show_estimate, show_report, show_suggestions) -> None:
    """Build the demo catalogue in the engine's folder (once), then search it with new phone photos of a
    few of its items, suggest their category and fields, and estimate their prices."""
    stamps = list_stamps(find_stamps_root(engine.settings.stamps_dir))
    print(f"building the demo catalogue in {engine.directory} from {len(stamps)} real photos "
          "(tuxpaint-stamps-default); prices are GENERATED for the demo")
    metadata = build_demo_catalogue_folder(engine.directory, stamps)
    show_report(engine.index_sources([], metadata))
    queries = make_demo_queries(stamps, engine.directory / "queries", query_count)
    for stamp, path in queries:
        print(f"\nquery: {path}\n  (a new photo of catalogue item {stamp.id!r}, {stamp.title}, on another background)")
        result = engine.search(path, k=5, with_estimate=True)
        show_result(result)
        show_suggestions(result.suggestions)
        show_estimate(result.estimate)
    if queries:
        print(f"\ntry your own: lookalike --catalog {engine.directory} search PHOTO.jpg")
