"""Photos grouped back into lots: the index is keyed by photo, answers are lots.

A lot scores its best-matching photo against a query photo (over the query's
views too), and ranks by that score plus a quarter of its second-best photo's.
A new item photographed several times is one query: its photos' scores for a
lot are fused by their mean, a photo that did not reach the lot
counting the lowest score it retrieved (an upper bound on what it would have
given), so a lot that matches every photo of the item beats one that matches a
single photo a little better.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lookalike.index import MISSING_KEY

PhotoSearch = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
PhotoOwners = Callable[[Sequence[int]], dict[int, tuple[int, int]]]


@dataclass
class LotMatch:
    item_key: int
    #: The best photo's cosine similarity (the mean over the query photos).
    score: float
    #: The lot's photo that matched best (its position in the lot), and the query photo that did.
    position: int
    query: int
    #: What lots are ordered by: the score plus SECOND_PHOTO_WEIGHT times the second-best photo's.
    ranking: float = 0.0


def _best_per_lot(keys: np.ndarray, scores: np.ndarray,
                  owners: dict[int, tuple[int, int]]) -> dict[int, tuple[float, int, float]]:
    """Per lot: its best photo's score, that photo's position, and its second-best photo's score (0 if none)."""
    per_photo: dict[int, float] = {}
    for key, score in zip(keys.ravel().tolist(), scores.ravel().tolist()):
        if key != MISSING_KEY and key in owners and score > per_photo.get(key, -np.inf):
            per_photo[key] = score
    ranked: dict[int, list[tuple[float, int]]] = {}
    for key, score in per_photo.items():
        item_key, position = owners[key]
        ranked.setdefault(item_key, []).append((score, position))
    best: dict[int, tuple[float, int, float]] = {}
    for item_key, photos in ranked.items():
        photos.sort(reverse=True)
        best[item_key] = (photos[0][0], photos[0][1], max(photos[1][0], 0.0) if len(photos) > 1 else 0.0)
    return best


#: How much a lot's second-best photo adds to its rank: a lot that matches the new item by two of its photos is
#: likelier the same than one that matches by one (+1 to +6 points recall@1, benchmarks/lots_bench.py).
SECOND_PHOTO_WEIGHT = 0.25


def rank_lots(search: PhotoSearch, owners: PhotoOwners, queries: Sequence[np.ndarray], k: int,
              photo_count: int) -> list[LotMatch]:
    """The k best lots for one new item: ``queries`` holds the view vectors of each of its photos; ``search``
    returns the n best photo keys per view; ``owners`` maps photo keys to (lot key, position)."""
    want = max(4 * k, 16)
    while True:
        per_query, seen, exhausted = [], set(), True
        asked = min(want, max(photo_count, 1))
        for views in queries:
            keys, scores = search(views, asked)
            best = _best_per_lot(keys, scores, owners(np.unique(keys[keys != MISSING_KEY]).tolist()))
            found = [row[row > -np.inf] for row in scores]
            floor = max((float(row.min()) for row in found if len(row)), default=-np.inf)
            per_query.append((best, floor))
            seen.update(best)
            exhausted &= all(len(row) < asked for row in found)  # a filter left fewer photos than asked for
        if len(seen) >= k or want >= photo_count or exhausted:
            break
        want *= 4  # many photos of few lots filled the list: look further
    matches = []
    for item_key in seen:
        scores = [best[item_key][0] if item_key in best else floor for best, floor in per_query]
        seconds = [best[item_key][2] if item_key in best else 0.0 for best, _ in per_query]
        query = int(np.argmax([best[item_key][0] if item_key in best else -np.inf for best, _ in per_query]))
        score = float(np.mean(scores))
        matches.append(LotMatch(item_key, score, per_query[query][0][item_key][1], query,
                                score + SECOND_PHOTO_WEIGHT * float(np.mean(seconds))))
    matches.sort(key=lambda match: -match.ranking)
    return matches[:k]
