"""Write a same-item retrieval set from real photos that packages ship, for
`lookalike evaluate` and benchmarks/quality_bench.py.

    .venv/bin/python benchmarks/make_same_item_set.py OUT [--stamp-queries 200] [--fashion 10000]

OUT/catalogue/metadata.csv   the catalogue: photos of items as an auction house shoots them
OUT/queries.csv              query_image,relevant_ids,kind: a new photo of a catalogue item

Query kinds:
- stamp:   a tuxpaint-stamps-default cut-out (on white in the catalogue) photographed again: real photo
           background, scale 0.5-0.9, rotation, perspective tilt, an occluder over one edge, uneven light,
           colour shift, blur, JPEG 60;
- photo:   one of foolbox's 20 ImageNet photos (a print or a painting in the catalogue) photographed lying on
           a table: the same chain, without the occluder;
- pair:    a real second photo of the same object or scene: opencv-doc's box / box_in_scene, graf1 / graf3,
           Blender_Suzanne1 / 2, leuvenA / B, rubberwhale1 / 2, basketball1 / 2, aloeL / R, left / right,
           ela_original / modified, imageTextN / R, and scikit-image's stereo motorcycle.
Catalogue distractors: the other opencv-doc and scikit-image photos (never used as backgrounds).

With --fashion N, OUT/fashion/ holds a class-level set: N Fashion-MNIST training images (Debian
dataset-fashion-mnist) as the catalogue, 200 test images as queries, every item of the same class relevant;
recall@1 there is precision@1, and mAP@10 a precision-weighted precision@10.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib.util
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lookalike.demo import (  # noqa: E402
    OPENCV_LOCATIONS,
    backgrounds,
    list_stamps,
    load_cutout,
    make_phone_photo,
    on_white,
)

REAL_PAIRS = (("box.png", "box_in_scene.png"), ("graf1.png", "graf3.png"), ("Blender_Suzanne1.jpg", "Blender_Suzanne2.jpg"),
              ("leuvenA.jpg", "leuvenB.jpg"), ("rubberwhale1.png", "rubberwhale2.png"), ("basketball1.png", "basketball2.png"),
              ("aloeL.jpg", "aloeR.jpg"), ("left.jpg", "right.jpg"), ("ela_original.jpg", "ela_modified.jpg"),
              ("imageTextN.png", "imageTextR.png"))
OPENCV_DISTRACTORS = ("HappyFish.jpg", "butterfly.jpg", "chicky_512.png", "smarties.png", "squirrel_cls.jpg", "stuff.jpg",
                      "cards.png", "LinuxLogo.jpg", "WindowsLogo.jpg", "sudoku.png", "blox.jpg", "licenseplate_motion.jpg",
                      "pca_test1.jpg", "notes.png", "pic1.png", "pic3.png", "aero1.jpg", "lena.jpg")
SKIMAGE_DISTRACTORS = ("camera", "clock", "coins", "horse", "hubble_deep_field", "logo", "moon", "page", "retina", "text",
                       "colorwheel", "microaneurysms")
FASHION = Path(__file__).resolve().parents[1] / "data/debs/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")


def opencv_folder() -> Path:
    for folder in OPENCV_LOCATIONS:
        if folder.is_dir():
            return folder
    raise SystemExit("opencv-doc's example data is missing: run scripts/setup.sh")


def skimage_photo(name: str) -> Image.Image:
    import skimage.data

    array = np.asarray(getattr(skimage.data, name)())
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.dtype != np.uint8:
        array = (255 * (array - array.min()) / max(1e-9, float(np.ptp(array)))).astype(np.uint8)
    return Image.fromarray(array[..., :3])


def foolbox_photos() -> list[Path]:
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("foolbox's ImageNet photos are missing: run scripts/setup.sh")
    return sorted((Path(next(iter(spec.submodule_search_locations))) / "data").glob("imagenet_*.jpg"))


class SetWriter:
    def __init__(self, root: Path):
        self.root = root
        self.items: list[dict] = []
        self.queries: list[dict] = []

    def item(self, item_id: str, image: Image.Image, category: str, title: str) -> None:
        path = self.root / "catalogue" / "photos" / f"{item_id}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.convert("RGB").save(path, "JPEG", quality=90)
        self.items.append({"id": item_id, "image": path.relative_to(self.root / "catalogue").as_posix(),
                           "title": title, "category": category})

    def query(self, name: str, data: bytes | Image.Image, relevant: list[str], kind: str) -> None:
        path = self.root / "queries" / kind / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            data.convert("RGB").save(path, quality=90)
        self.queries.append({"query_image": path.relative_to(self.root).as_posix(), "relevant_ids": "|".join(relevant),
                             "kind": kind})

    def finish(self) -> None:
        write_csv(self.root / "catalogue" / "metadata.csv", self.items)
        write_csv(self.root / "queries.csv", self.queries)


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def make_same_item_set(out: Path, stamp_queries: int = 200, seed: int = 5) -> Path:
    rng = np.random.default_rng(seed)
    writer = SetWriter(out)
    pool = backgrounds()
    stamps = list_stamps()
    for stamp in stamps:
        writer.item(f"stamp/{stamp.id}", on_white(load_cutout(stamp)), stamp.category, stamp.title)
    for index in rng.choice(len(stamps), size=min(stamp_queries, len(stamps)), replace=False):
        stamp = stamps[int(index)]
        photo = make_phone_photo(load_cutout(stamp), pool[int(rng.integers(len(pool)))], rng,
                                 perspective=0.12, occlusion=0.3, light_gradient=True)
        writer.query(f"{stamp.id.replace('/', '-')}.jpg", photo, [f"stamp/{stamp.id}"], "stamp")

    for path in foolbox_photos():
        item_id = f"photo/{path.stem}"
        image = Image.open(path).convert("RGB")
        writer.item(item_id, image, "photo", path.stem)
        photo = make_phone_photo(image.convert("RGBA"), pool[int(rng.integers(len(pool)))], rng,
                                 perspective=0.12, light_gradient=True)
        writer.query(f"{path.stem}.jpg", photo, [item_id], "photo")

    opencv = opencv_folder()
    for catalogue_name, query_name in REAL_PAIRS:
        if not (opencv / catalogue_name).exists() or not (opencv / query_name).exists():
            continue
        item_id = f"opencv/{Path(catalogue_name).stem}"
        writer.item(item_id, Image.open(opencv / catalogue_name), "scene", catalogue_name)
        writer.query(f"{Path(query_name).stem}.jpg", Image.open(opencv / query_name), [item_id], "pair")
    import skimage.data

    left, right, _ = skimage.data.stereo_motorcycle()
    writer.item("skimage/motorcycle", Image.fromarray(left), "scene", "motorcycle")
    writer.query("motorcycle-right.jpg", Image.fromarray(right), ["skimage/motorcycle"], "pair")
    for name in OPENCV_DISTRACTORS:
        if (opencv / name).exists():
            writer.item(f"opencv/{Path(name).stem}", Image.open(opencv / name), "distractor", name)
    for name in SKIMAGE_DISTRACTORS:
        writer.item(f"skimage/{name}", skimage_photo(name), "distractor", name)
    writer.finish()
    return out / "queries.csv"


def read_idx(name: str) -> np.ndarray:
    with gzip.open(FASHION / name) as handle:
        data = handle.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def make_fashion_set(out: Path, items: int, queries: int = 200, seed: int = 5) -> Path:
    """Product photos as Fashion-MNIST has them: 28x28 grey, inverted to dark-on-white, upscaled to 112 px."""
    if not FASHION.is_dir():
        raise SystemExit("dataset-fashion-mnist is missing: run scripts/setup.sh")
    rng = np.random.default_rng(seed)
    train, train_labels = read_idx("train-images-idx3-ubyte.gz"), read_idx("train-labels-idx1-ubyte.gz")
    test, test_labels = read_idx("t10k-images-idx3-ubyte.gz"), read_idx("t10k-labels-idx1-ubyte.gz")
    writer = SetWriter(out)
    by_class: dict[int, list[str]] = {label: [] for label in range(10)}

    def photo(pixels: np.ndarray) -> Image.Image:
        return Image.fromarray(255 - pixels).resize((112, 112), Image.Resampling.BICUBIC)

    for index in rng.choice(len(train), size=min(items, len(train)), replace=False):
        label = int(train_labels[index])
        item_id = f"fashion/{index:05d}"
        writer.item(item_id, photo(train[index]), FASHION_CLASSES[label], FASHION_CLASSES[label])
        by_class[label].append(item_id)
    for index in rng.choice(len(test), size=queries, replace=False):
        label = int(test_labels[index])
        writer.query(f"{index:05d}.png", photo(test[index]), by_class[label], "fashion")
    writer.finish()
    return out / "queries.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--stamp-queries", type=int, default=200)
    parser.add_argument("--fashion", type=int, default=0, help="also write a Fashion-MNIST set of this many items")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    queries = make_same_item_set(args.out, args.stamp_queries, args.seed)
    print(f"wrote {queries} and {args.out / 'catalogue' / 'metadata.csv'}")
    if args.fashion:
        print(f"wrote {make_fashion_set(args.out / 'fashion', args.fashion, seed=args.seed)}")
    print(f"try: lookalike --catalog {args.out / 'catalog'} index --metadata {args.out / 'catalogue' / 'metadata.csv'}\n"
          f"     lookalike --catalog {args.out / 'catalog'} evaluate {queries}")


if __name__ == "__main__":
    main()
