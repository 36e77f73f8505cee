"""Spatial verification of a pair of photos (Philbin et al. 2007): match local features, fit one geometric
transform robustly, and count the matches it explains (inliers).

Photos of one object agree on many points under one homography; a lookalike (another print, the mirror
image, a colour variant, a similar design) agrees on few or, for colour variants, on points whose colours
differ. The transform maps the catalogue photo into the query photo, so its corners outline where the
catalogue photo lies in the query.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lookalike.matching.local_features import LocalFeatures

METHODS = ("magsac", "ransac", "affine")
DEFAULT_METHOD = "magsac"
#: Lowe's ratio test: a match counts when its best distance is under this share of the second best.
RATIO = 0.8
#: Fewer putative matches than this are not worth fitting (a homography needs 4; noise fits 4-6 anywhere).
MIN_MATCHES = 8
#: Reprojection threshold in pixels at local_features.MAX_SIDE.
THRESHOLD = 6.0
#: How many of the inlier pairs a Verification keeps to show (the strongest first).
KEPT_PAIRS = 40
#: Chroma (CIELAB a*b* distance from grey) above which a point has a colour worth comparing.
CHROMATIC = 12.0


@dataclass(frozen=True)
class Verification:
    inliers: int
    #: Up to KEPT_PAIRS inlier pairs: (x, y) in the query photo, then (x, y) in the catalogue photo, each 0-1.
    pairs: np.ndarray
    #: The catalogue photo's corners (top-left, top-right, bottom-right, bottom-left) in the query photo, 0-1.
    region: np.ndarray | None
    #: Median CIELAB a*b* difference between the two photos at the inliers that have a colour (at all of them
    #: when fewer than 5 do): a colour variant differs there, while black outlines and white grounds agree.
    colour_difference: float | None

    @staticmethod
    def none() -> Verification:
        return Verification(0, np.zeros((0, 4), np.float32), None, None)

    def to_dict(self) -> dict:
        return {"inliers": self.inliers,
                "pairs": [[round(float(value), 4) for value in pair] for pair in self.pairs],
                "region": None if self.region is None else [[round(float(x), 4), round(float(y), 4)] for x, y in self.region],
                "colour_difference": None if self.colour_difference is None else round(self.colour_difference, 2)}


def _matches(query: LocalFeatures, candidate: LocalFeatures) -> list[cv2.DMatch]:
    if len(query) < 2 or len(candidate) < 2:
        return []
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING if query.kind == "orb" else cv2.NORM_L2)
    good = []
    for pair in matcher.knnMatch(query.descriptors, candidate.descriptors, k=2):
        if len(pair) == 2 and pair[0].distance < RATIO * pair[1].distance:
            good.append(pair[0])
    return good


def _fit(source: np.ndarray, target: np.ndarray, method: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A 3x3 transform taking source points to target points, and the inlier mask."""
    if method == "affine":
        matrix, mask = cv2.estimateAffinePartial2D(source, target, method=cv2.RANSAC, ransacReprojThreshold=THRESHOLD)
        return (None, None) if matrix is None else (np.vstack([matrix, [0, 0, 1]]), mask)
    flag = cv2.USAC_MAGSAC if method == "magsac" else cv2.RANSAC
    return cv2.findHomography(source, target, flag, THRESHOLD, maxIters=2000, confidence=0.995)


def _plausible(matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray | None:
    """The catalogue photo's corners under ``matrix``, or None when the transform mirrors, folds or collapses it."""
    if np.linalg.det(matrix[:2, :2]) <= 0:
        return None  # a reflection: the mirror image is another object
    width, height = size
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    mapped = cv2.perspectiveTransform(corners[None], matrix)[0]
    if not np.all(np.isfinite(mapped)) or not cv2.isContourConvex(mapped.astype(np.float32)):
        return None
    return mapped


def verify(query: LocalFeatures, candidate: LocalFeatures, method: str = DEFAULT_METHOD) -> Verification:
    """How well ``candidate`` (a catalogue photo) agrees with ``query`` under one geometric transform."""
    if method not in METHODS:
        raise ValueError(f"unknown verification method {method!r}; choose one of {', '.join(METHODS)}")
    matches = _matches(query, candidate)
    if len(matches) < MIN_MATCHES:
        return Verification.none()
    query_points = np.float32([query.points[match.queryIdx] for match in matches])
    candidate_points = np.float32([candidate.points[match.trainIdx] for match in matches])
    matrix, mask = _fit(candidate_points, query_points, method)
    if matrix is None or mask is None:
        return Verification.none()
    corners = _plausible(matrix, candidate.size)
    if corners is None:
        return Verification.none()
    inlier_rows = np.flatnonzero(mask.ravel())
    # Several query points matched to one catalogue point explain nothing more than one.
    _, unique_rows = np.unique(candidate_points[inlier_rows].round(1), axis=0, return_index=True)
    inlier_rows = inlier_rows[np.sort(unique_rows)]
    if len(inlier_rows) < 4:
        return Verification.none()
    inlier_matches = [matches[row] for row in inlier_rows]
    query_colours = query.colours[[match.queryIdx for match in inlier_matches]]
    candidate_colours = candidate.colours[[match.trainIdx for match in inlier_matches]]
    differences = np.linalg.norm(query_colours[:, 1:] - candidate_colours[:, 1:], axis=1)
    coloured = np.maximum(np.linalg.norm(query_colours[:, 1:] - 128, axis=1),
                          np.linalg.norm(candidate_colours[:, 1:] - 128, axis=1)) > CHROMATIC
    chroma = float(np.median(differences[coloured] if coloured.sum() >= 5 else differences))
    strongest = np.argsort([match.distance for match in inlier_matches])[:KEPT_PAIRS]
    query_size = np.float32(query.size)
    candidate_size = np.float32(candidate.size)
    pairs = np.hstack([query_points[inlier_rows][strongest] / query_size,
                       candidate_points[inlier_rows][strongest] / candidate_size]).astype(np.float32)
    return Verification(len(inlier_rows), pairs, corners / query_size, chroma)
