"""The search's shortlist checked with local features: inliers, a fused score, the same-object verdict.

The CNN score ranks what looks alike; the inlier count of a geometric fit (matching/verify.py) says
whether the photos show the very object. The two are fused as ``score + FUSION_WEIGHT * ln(1 + inliers)``
(inliers alone lose colour, which the CNN sees), and a hit is the same object when it has at least
SAME_OBJECT_INLIERS inliers whose colours agree. Both were set on benchmarks/verify_bench.py's sets.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from lookalike.engine.results import SearchHit
from lookalike.errors import LookalikeError
from lookalike.images import DecodeLimits, decode_image
from lookalike.matching import LocalFeatures, Verification, extract, local_features, verify

FUSION_WEIGHT = 0.05
SAME_OBJECT_INLIERS = 25
SAME_OBJECT_MAX_COLOUR = 20.0
#: Catalogue photos' features kept in memory (about 0.5 MB each with RootSIFT).
CACHE_PHOTOS = 256
#: The query photo's keypoints are found at this size (longest side); catalogue photos' at local_features.MAX_SIDE.
QUERY_MAX_SIDE = local_features.MAX_SIDE


def same_object(verification: Verification) -> bool:
    return (verification.inliers >= SAME_OBJECT_INLIERS and verification.colour_difference is not None
            and verification.colour_difference <= SAME_OBJECT_MAX_COLOUR)


def fused_score(ranking: float, inliers: int) -> float:
    """A lot's rank (its score, with its second photo's share) with the verification's say added."""
    return ranking + FUSION_WEIGHT * math.log1p(inliers)


class ShortlistVerifier:
    """Local features of query photos and (cached) catalogue photos, and the check of a result list."""

    def __init__(self, decode_limits: DecodeLimits, workers: int = 2):
        self.decode_limits = decode_limits
        self._cache: OrderedDict[tuple, LocalFeatures | None] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="verify")

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    def query_features(self, image: Image.Image) -> LocalFeatures:
        return extract(image, max_side=QUERY_MAX_SIDE)

    def photo_features(self, path: str | None) -> LocalFeatures | None:
        """Features of a catalogue photo, or None when its file is gone or unreadable."""
        if not path:
            return None
        try:
            stat = Path(path).stat()
        except OSError:
            return None
        key = (path, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        try:
            features = extract(decode_image(path, target_size=local_features.MAX_SIDE, limits=self.decode_limits))
        except LookalikeError:
            features = None
        with self._lock:
            self._cache[key] = features
            while len(self._cache) > CACHE_PHOTOS:
                self._cache.popitem(last=False)
        return features

    def check(self, queries: Sequence[LocalFeatures | None], hits: list[SearchHit], top: int) -> list[SearchHit]:
        """Verify the first ``top`` hits' matched photos against each query photo (None: one that could not be
        read), then order all hits by the fused score."""
        def one(hit: SearchHit) -> None:
            candidate = self.photo_features(hit.image_path)
            if candidate is None:
                return
            tried = [(verify(query, candidate), position) for position, query in enumerate(queries) if query is not None]
            if not tried:
                return
            best, hit.verified_query = max(tried, key=lambda found: found[0].inliers)
            hit.verification = best
            hit.same_object = same_object(best)
            hit.rank_score = fused_score(hit.ranking, best.inliers)

        shortlist = hits[:top]
        list(self._pool.map(one, shortlist))
        return sorted(shortlist, key=lambda hit: -hit.ranking) + hits[top:]
