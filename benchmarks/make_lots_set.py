"""Write a lots retrieval set: lots of 2-6 photos each and new items photographed 1-3 times,
from real photos that packages ship (for issue "Lots, not photos" and its benchmark).

    .venv/bin/python benchmarks/make_lots_set.py OUT [--stamp-lots 300] [--seed 5]

OUT/catalogue/metadata.csv        id,image,title,category: ``image`` lists the lot's photos separated by |,
                                  the main photo first (the multi-photo import reads this)
OUT/catalogue/metadata-main.csv   the same lots with their main photo only (today's one-photo import, the baseline)
OUT/queries-1.csv, -2.csv, -3.csv query_image,relevant_ids,kind: each new item with its first 1, 2 or 3 photos
                                  (several separated by |)

Lots:
- stamp:      a tuxpaint-stamps-default cut-out; the main photo is the object on white, the others studio shots of
              the same object: an off-axis shot on white, a detail (a crop), another backdrop and light; with
              --extra-photos mixed also re-shoots on a real photo background (scale, rotation, tilt, light, JPEG);
- chessboard: opencv-doc's calibration chessboard, genuinely different photos of one object (left01-left05);
- scene:      opencv-doc's real pairs and scikit-image's stereo motorcycle: the first photo and a re-framed
              copy of it (cropped, light shifted) in the lot, the second photo as the new item;
- distractor: other opencv-doc and scikit-image photos, one photo each.
Queries: for half the stamp lots (chosen at random), three new phone photos of the object, never in the
catalogue, each on another background (lots are re-shot on one half of the background photos, new items on the
other half); for the chessboard, right01-right03; for a scene, its second photo and
two re-framed copies of it.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from make_same_item_set import (
    OPENCV_DISTRACTORS,
    REAL_PAIRS,
    SKIMAGE_DISTRACTORS,
    opencv_folder,
    skimage_photo,
    write_csv,
)
from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lookalike.demo import backgrounds, list_stamps, load_cutout, make_phone_photo, on_white, tilt  # noqa: E402

QUERY_PHOTOS = 3


def decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def detail(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A closer shot of part of the object: a window of 50-70% of the side."""
    share = float(rng.uniform(0.5, 0.7))
    width, height = int(image.width * share), int(image.height * share)
    left, top = int(rng.integers(0, image.width - width + 1)), int(rng.integers(0, image.height - height + 1))
    return image.crop((left, top, left + width, top + height))


def reframed(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The same scene framed a little differently, in other light."""
    framed = detail(image, rng) if rng.random() < 0.5 else image
    framed = framed.resize((max(64, int(framed.width * 0.9)), max(64, int(framed.height * 0.9))))
    return ImageEnhance.Brightness(framed.convert("RGB")).enhance(float(rng.uniform(0.75, 1.25)))


class LotsWriter:
    def __init__(self, root: Path):
        self.root = root
        self.lots: list[dict] = []
        self.queries: list[dict] = []

    def lot(self, lot_id: str, photos: list[Image.Image], category: str, title: str) -> None:
        paths = []
        for number, photo in enumerate(photos):
            path = self.root / "catalogue" / "photos" / lot_id / f"{number}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            photo.convert("RGB").save(path, "JPEG", quality=88)
            paths.append(path.relative_to(self.root / "catalogue").as_posix())
        self.lots.append({"id": lot_id, "image": "|".join(paths), "title": title, "category": category})

    def query(self, name: str, photos: list[Image.Image | bytes], relevant: str, kind: str) -> None:
        paths = []
        for number, photo in enumerate(photos):
            path = self.root / "queries" / kind / f"{name}-{number}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(photo, bytes):
                path.write_bytes(photo)
            else:
                photo.convert("RGB").save(path, "JPEG", quality=85)
            paths.append(path.relative_to(self.root).as_posix())
        self.queries.append({"paths": paths, "relevant_ids": relevant, "kind": kind})

    def finish(self) -> None:
        write_csv(self.root / "catalogue" / "metadata.csv", self.lots)
        write_csv(self.root / "catalogue" / "metadata-main.csv",
                  [{**lot, "image": lot["image"].split("|")[0]} for lot in self.lots])
        for count in range(1, QUERY_PHOTOS + 1):
            write_csv(self.root / f"queries-{count}.csv",
                      [{"query_image": "|".join(query["paths"][:count]), "relevant_ids": query["relevant_ids"],
                        "kind": query["kind"]} for query in self.queries])


def on_backdrop(cutout: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A studio shot on a plain backdrop of another tone, in other light."""
    tone = tuple(int(value) for value in rng.integers(150, 245, size=3))
    side = int(max(cutout.size) * 1.25)
    canvas = Image.new("RGB", (side, side), tone)
    canvas.paste(cutout, ((side - cutout.width) // 2, (side - cutout.height) // 2), cutout.convert("RGBA"))
    return ImageEnhance.Brightness(canvas).enhance(float(rng.uniform(0.8, 1.15)))


def stamp_lot(cutout: Image.Image, pool: list[Image.Image], rng: np.random.Generator, extra: str) -> list[Image.Image]:
    """The main photo on white and 1-5 more: studio shots (another angle, a detail, another backdrop and light), or
    with ``extra="mixed"`` also re-shoots on real photo backgrounds."""
    main = on_white(cutout)
    others = []
    kinds = ["reshoot", "reshoot", "detail", "angle"] if extra == "mixed" else ["backdrop", "detail", "angle"]
    for _ in range(int(rng.integers(1, 6))):  # 2-6 photos in all
        kind = rng.choice(kinds)
        if kind == "backdrop":
            others.append(on_backdrop(tilt(cutout.convert("RGBA"), 0.06, rng), rng))
        elif kind == "reshoot":
            others.append(decode(make_phone_photo(cutout, pool[int(rng.integers(len(pool)))], rng, perspective=0.08,
                                                  jpeg_quality=85)))
        elif kind == "detail":
            others.append(detail(main, rng))
        else:
            others.append(on_white(tilt(cutout.convert("RGBA"), 0.12, rng).rotate(float(rng.uniform(-20, 20)), expand=True)))
    return [main, *others]


def make_lots_set(out: Path, stamp_lots: int = 300, seed: int = 5, extra: str = "studio") -> Path:
    rng = np.random.default_rng(seed)
    writer = LotsWriter(out)
    # The house re-shoots its lots in other places than where new items are photographed: two background pools, so
    # that a query never shares its background with a catalogue photo (which made any lot shot there look alike).
    every = backgrounds()
    studio, elsewhere = every[0::2], every[1::2]
    stamps = list_stamps()
    chosen = rng.choice(len(stamps), size=min(stamp_lots, len(stamps)), replace=False)
    for position, index in enumerate(chosen):
        stamp = stamps[int(index)]
        lot_id = f"stamp/{stamp.id}"
        cutout = load_cutout(stamp)
        writer.lot(lot_id, stamp_lot(cutout, studio, rng, extra), stamp.category, stamp.title)
        if position % 2 == 0:
            photos = [make_phone_photo(cutout, elsewhere[int(rng.integers(len(elsewhere)))], rng, perspective=0.12, occlusion=0.3,
                                       light_gradient=True) for _ in range(QUERY_PHOTOS)]
            writer.query(stamp.id.replace("/", "-"), photos, lot_id, "stamp")

    opencv = opencv_folder()
    boards = [opencv / f"left0{number}.jpg" for number in range(1, 6)]
    if all(path.exists() for path in boards):
        writer.lot("opencv/chessboard", [Image.open(path) for path in boards], "scene", "calibration chessboard")
        writer.query("chessboard", [Image.open(opencv / f"right0{number}.jpg") for number in range(1, 4)],
                     "opencv/chessboard", "chessboard")
    for first, second in REAL_PAIRS:
        if not (opencv / first).exists() or not (opencv / second).exists():
            continue
        lot_id = f"opencv/{Path(first).stem}"
        original = Image.open(opencv / first).convert("RGB")
        writer.lot(lot_id, [original, reframed(original, rng)], "scene", Path(first).stem)
        new = Image.open(opencv / second).convert("RGB")
        writer.query(Path(second).stem, [new, reframed(new, rng), reframed(new, rng)], lot_id, "scene")
    import skimage.data

    left, right, _ = skimage.data.stereo_motorcycle()
    writer.lot("skimage/motorcycle", [Image.fromarray(left), reframed(Image.fromarray(left), rng)], "scene", "motorcycle")
    writer.query("motorcycle", [Image.fromarray(right), reframed(Image.fromarray(right), rng),
                                reframed(Image.fromarray(right), rng)], "skimage/motorcycle", "scene")
    for name in OPENCV_DISTRACTORS:
        if (opencv / name).exists():
            writer.lot(f"opencv/{Path(name).stem}", [Image.open(opencv / name)], "distractor", name)
    for name in SKIMAGE_DISTRACTORS:
        writer.lot(f"skimage/{name}", [skimage_photo(name)], "distractor", name)
    writer.finish()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--stamp-lots", type=int, default=300)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--extra-photos", choices=["studio", "mixed"], default="studio",
                        help="a stamp lot's other photos: studio shots (default), or also re-shoots on real backgrounds")
    args = parser.parse_args()
    out = make_lots_set(args.out, args.stamp_lots, args.seed, args.extra_photos)
    lots = (out / "catalogue" / "metadata.csv").read_text().count("\n") - 1
    queries = (out / "queries-1.csv").read_text().count("\n") - 1
    print(f"wrote {lots} lots to {out / 'catalogue'} and {queries} new items in {out}/queries-{{1,2,3}}.csv\n"
          f"baseline today (main photo only, one query photo):\n"
          f"  lookalike --catalog {out / 'catalog-main'} index --metadata {out / 'catalogue' / 'metadata-main.csv'}\n"
          f"  lookalike --catalog {out / 'catalog-main'} evaluate {out / 'queries-1.csv'}")


if __name__ == "__main__":
    main()
