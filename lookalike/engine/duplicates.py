"""Lots in the catalogue that show the same object: relisted items, double imports.

Never all pairs: each lot asks the index for its nearest lots (by any of its photos), the ones scoring at
least ``min_score`` are verified with local features against the lot's photos, and verified pairs are
joined into groups (a relisted piece sold three times is one group of three).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lookalike.engine.verification import same_object
from lookalike.errors import LookalikeError
from lookalike.matching import verify
from lookalike.store import Item

if TYPE_CHECKING:
    from lookalike.engine.engine import Engine

#: Nearest lots asked per lot, and the CNN score a pair needs before it is verified.
NEIGHBOURS = 5
MIN_SCORE = 0.75
#: A pair this alike is checked for byte-identical photos first.
IDENTICAL_SCORE = 0.99


@dataclass
class DuplicatePair:
    ids: tuple[str, str]
    #: The photos (positions in each lot) that agree, their CNN score and the verification's evidence.
    photos: tuple[int, int]
    score: float
    inliers: int
    colour_difference: float | None
    #: The two photos are one file's bytes (a double import): no verification needed (inliers -1).
    identical: bool = False

    def to_dict(self) -> dict:
        return {"ids": list(self.ids), "photos": list(self.photos), "score": round(self.score, 4), "inliers": self.inliers,
                "colour_difference": None if self.colour_difference is None else round(self.colour_difference, 2),
                "identical": self.identical}


@dataclass
class DuplicateGroup:
    ids: list[str]
    pairs: list[DuplicatePair] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"ids": self.ids, "pairs": [pair.to_dict() for pair in self.pairs]}


@dataclass
class DuplicateReport:
    groups: list[DuplicateGroup]
    lots: int
    verified_pairs: int
    seconds: float

    def to_dict(self) -> dict:
        return {"groups": [group.to_dict() for group in self.groups], "lots": self.lots,
                "verified_pairs": self.verified_pairs, "seconds": round(self.seconds, 1)}


def _groups(pairs: list[DuplicatePair]) -> list[DuplicateGroup]:
    parent: dict[str, str] = {}

    def root(lot: str) -> str:
        while parent.setdefault(lot, lot) != lot:
            parent[lot] = parent[parent[lot]]
            lot = parent[lot]
        return lot

    for pair in pairs:
        parent[root(pair.ids[0])] = root(pair.ids[1])
    groups: dict[str, DuplicateGroup] = {}
    for lot in sorted(parent):
        groups.setdefault(root(lot), DuplicateGroup([])).ids.append(lot)
    for pair in pairs:
        groups[root(pair.ids[0])].pairs.append(pair)
    return sorted(groups.values(), key=lambda group: (-len(group.ids), group.ids))


def _file_digest(path: str | None) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
    except OSError:
        return None


def _identical_photo(lot: Item, hit) -> int | None:
    """The position of a photo of ``lot`` whose file holds the very bytes of the hit's matched photo (a double
    import), or None. Flat objects (a plain flag) have too few keypoints to verify, but not too few bytes."""
    if hit.score < IDENTICAL_SCORE:
        return None
    theirs = _file_digest(hit.image_path)
    for position, photo in enumerate(lot.photos):
        if theirs is not None and _file_digest(photo.path) == theirs:
            return position
    return None


def _verified_pair(engine: Engine, lot: Item, own: list, hit) -> DuplicatePair | None:
    """The evidence that a lot (its photos' features ``own``) and a hit show one object, or None."""
    identical = _identical_photo(lot, hit)
    if identical is not None:
        return DuplicatePair((lot.id, hit.id), (identical, hit.matched_photo), hit.score, -1, 0.0, identical=True)
    theirs = engine.verifier.photo_features(hit.image_path)
    results = [(verify(mine, theirs), position) for position, mine in enumerate(own) if mine is not None and theirs is not None]
    if not results:
        return None
    best, position = max(results, key=lambda result: result[0].inliers)
    if not same_object(best):
        return None
    return DuplicatePair((lot.id, hit.id), (position, hit.matched_photo), hit.score, best.inliers, best.colour_difference)


def find_duplicates(engine: Engine, neighbours: int = NEIGHBOURS, min_score: float = MIN_SCORE,
                    on_total: Callable[[int], None] | None = None, on_progress: Callable[[int], None] | None = None,
                    verified: dict[tuple[str, str], DuplicatePair | None] | None = None) -> DuplicateReport:
    """See Engine.duplicates. ``verified`` keeps each verified pair's outcome (None: not the same object) across
    calls on an unchanged catalogue, so another ``neighbours`` or ``min_score`` verifies only new pairs."""
    verified = {} if verified is None else verified
    if not 1 <= neighbours <= 100 or not -1.0 <= min_score <= 1.0:
        raise LookalikeError("neighbours must be 1-100 and min_score between -1 and 1")
    started = time.perf_counter()
    lots = list(engine.catalog.items())
    if on_total:
        on_total(len(lots))
    checked: set[tuple[str, str]] = set()
    found: list[DuplicatePair] = []
    for lot in lots:
        try:
            _, vectors = engine._item_vectors(lot.id)
        except LookalikeError:
            continue  # removed meanwhile, or photos without a vector (lookalike check reports those)
        hits = engine.search_vector(vectors, neighbours, exclude_keys=[photo.key for photo in lot.photos])
        candidates = [hit for hit in hits if hit.score >= min_score and tuple(sorted((lot.id, hit.id))) not in checked]
        own = None
        for hit in candidates:
            pair = tuple(sorted((lot.id, hit.id)))
            checked.add(pair)
            if pair not in verified:
                if own is None:
                    own = [engine.verifier.photo_features(photo.path) for photo in lot.photos]
                verified[pair] = _verified_pair(engine, lot, own, hit)
            if verified[pair] is not None:
                found.append(verified[pair])
        if on_progress:
            on_progress(1)
    return DuplicateReport(_groups(found), len(lots), len(checked), time.perf_counter() - started)
