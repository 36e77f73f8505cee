"""Where items come from: folders of photos and metadata files (CSV or JSONL)."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from lookalike.store import Item
from lookalike.text import one_line

KNOWN_COLUMNS = ("id", "image", "images", "title", "category", "price", "currency", "sold_at")
#: Separates a lot's photos in a metadata file's image column (as it separates ids in a queries file).
PHOTO_SEPARATOR = "|"


@dataclass
class SourceEntry:
    """A lot and its photo files, the main one first."""

    item: Item
    paths: list[Path]

    @property
    def path(self) -> Path:
        return self.paths[0]


@dataclass
class Problem:
    where: str
    reason: str

    def __str__(self) -> str:
        # One line per problem, whatever control characters a hostile file name holds.
        return one_line(f"{self.where}: {self.reason}")


def walk_folder(root: Path) -> tuple[list[Path], list[Problem]]:
    """Every regular, non-hidden file under ``root``; symlinked folders are not
    followed, so a symlink loop cannot trap the walk."""
    files, problems = [], []

    def on_error(error: OSError) -> None:
        problems.append(Problem(str(error.filename), f"cannot read folder: {error.strerror}"))

    for folder, subfolders, names in os.walk(root, onerror=on_error, followlinks=False):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            if path.is_symlink() and not path.exists():
                problems.append(Problem(str(path), "broken or looping symlink"))
            elif path.is_file():
                files.append(path)
            elif not path.is_dir():
                problems.append(Problem(str(path), "not a regular file (a pipe, socket or device)"))
    return files, problems


def entries_from_folder(root: Path, lot_per_folder: bool = False) -> tuple[list[SourceEntry], list[Problem]]:
    """One lot per file (id: its path below ``root``, category: its folder), or with ``lot_per_folder`` one
    lot per folder that holds files (id: the folder's path below ``root``, category: its parent folder; photos
    in name order)."""
    root = Path(root)
    if root.is_file():
        return [SourceEntry(Item(id=root.name, title=root.stem), [root.resolve()])], []
    if not root.is_dir():
        return [], [Problem(str(root), "no such file or folder")]
    files, problems = walk_folder(root)
    if lot_per_folder:
        folders: dict[Path, list[Path]] = {}
        for path in files:
            folders.setdefault(path.parent, []).append(path.absolute())
        entries = []
        for folder, paths in folders.items():
            relative = folder.relative_to(root).as_posix()
            lot_id = root.resolve().name if relative == "." else relative
            parent = folder.parent.relative_to(root).as_posix() if folder != root else "."
            entries.append(SourceEntry(Item(id=lot_id, title=folder.name, category=None if parent == "." else parent), paths))
        return entries, problems
    entries = []
    for path in files:
        relative = path.relative_to(root).as_posix()
        category = path.parent.relative_to(root).as_posix()
        entries.append(
            SourceEntry(Item(id=relative, title=path.stem, category=None if category == "." else category), [path.absolute()])
        )
    return entries, problems


def _image_list(row: dict) -> list[str]:
    """A row's photos: a JSON ``images`` list, or the ``image`` column with paths separated by |."""
    images = row.get("images")
    if isinstance(images, list):
        return [str(image).strip() for image in images if str(image).strip()]
    image = row.get("image")
    if isinstance(image, list):
        return [str(part).strip() for part in image if str(part).strip()]
    return [part.strip() for part in str(image or "").split(PHOTO_SEPARATOR) if part.strip()]


def _parse_price(raw) -> float | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, (int, float)):
        return float(raw)
    return float(str(raw).strip().replace(",", ""))


def _rows(metadata: Path) -> list[tuple[str, dict]]:
    if metadata.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        with open(metadata, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as error:
                        row = {"__error__": f"invalid JSON: {error.msg}"}
                    rows.append((f"{metadata.name}:{number}", row if isinstance(row, dict) else {"__error__": "not an object"}))
        return rows
    with open(metadata, encoding="utf-8-sig", newline="") as handle:
        return [(f"{metadata.name}:{number}", row) for number, row in enumerate(csv.DictReader(handle), 2)]


def entries_from_metadata(metadata: Path) -> tuple[list[SourceEntry], list[Problem]]:
    """Items from a CSV or JSONL file with columns id,image,title,category,price,...;
    image paths are relative to the metadata file, other columns go to ``extra``."""
    metadata = Path(metadata)
    try:
        rows = _rows(metadata)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        return [], [Problem(str(metadata), f"cannot read metadata: {error}")]
    entries, problems = [], []
    for where, row in rows:
        if "__error__" in row:
            problems.append(Problem(where, row["__error__"]))
            continue
        images = _image_list(row)
        if not images:
            problems.append(Problem(where, "no image column value"))
            continue
        paths = [(metadata.parent / image).absolute() for image in images]
        try:
            price = _parse_price(row.get("price"))
        except ValueError:
            problems.append(Problem(where, f"price {row.get('price')!r} is not a number"))
            continue
        extra = {key: value for key, value in row.items() if key not in KNOWN_COLUMNS and key is not None and value not in (None, "")}
        item = Item(
            id=str(row.get("id") or images[0]).strip(),
            title=(row.get("title") or None),
            category=(row.get("category") or None),
            price=price,
            currency=(row.get("currency") or None),
            sold_at=(str(row["sold_at"]) if row.get("sold_at") else None),
            extra=extra,
        )
        entries.append(SourceEntry(item, paths))
    return entries, problems
