"""Local features of a photo (OpenCV): keypoints, their descriptors and the colour around them.

A pooled CNN vector says what a photo looks like; local features say where two photos agree, point by
point, which is what tells the very object apart from one like it (verify.py). SIFT with RootSIFT
descriptors is the default (benchmarks/verify_bench.py measures it against plain SIFT and ORB).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

KINDS = ("rootsift", "sift", "orb")
DEFAULT_KIND = "rootsift"
#: Photos are matched at this size (longest side, pixels) with at most this many keypoints.
MAX_SIDE = 512
MAX_KEYPOINTS = 800
#: Side of the square whose mean colour is kept per keypoint.
COLOUR_PATCH = 5

cv2.setNumThreads(1)  # callers run several extractions in parallel threads


@dataclass(frozen=True)
class LocalFeatures:
    kind: str
    #: Keypoint positions in pixels of the matched copy of the photo, and that copy's (width, height).
    points: np.ndarray
    size: tuple[int, int]
    descriptors: np.ndarray
    #: CIELAB colour (L, a, b, each 0-255 as OpenCV scales it) around each keypoint.
    colours: np.ndarray

    def __len__(self) -> int:
        return len(self.points)

    @property
    def nbytes(self) -> int:
        return self.points.nbytes + self.descriptors.nbytes + self.colours.nbytes


def _detector(kind: str):
    if kind in ("sift", "rootsift"):
        return cv2.SIFT_create(nfeatures=MAX_KEYPOINTS)
    if kind == "orb":
        return cv2.ORB_create(nfeatures=MAX_KEYPOINTS)
    raise ValueError(f"unknown local feature kind {kind!r}; choose one of {', '.join(KINDS)}")


def extract(image: Image.Image, kind: str = DEFAULT_KIND, max_side: int | None = None) -> LocalFeatures:
    """Keypoints of ``image`` (scaled so its longest side is at most ``max_side``, by default MAX_SIDE)."""
    rgb = image.convert("RGB")
    scale = (max_side or MAX_SIDE) / max(rgb.size)
    if scale < 1:
        rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.BILINEAR)
    pixels = np.asarray(rgb)
    grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    keypoints, descriptors = _detector(kind).detectAndCompute(grey, None)
    width, height = rgb.size
    if descriptors is None or not keypoints:
        empty = np.zeros((0, 32 if kind == "orb" else 128), np.uint8 if kind == "orb" else np.float32)
        return LocalFeatures(kind, np.zeros((0, 2), np.float32), (width, height), empty, np.zeros((0, 3), np.float32))
    points = np.array([keypoint.pt for keypoint in keypoints], np.float32)
    if kind == "rootsift":
        # Hellinger kernel (Arandjelovic & Zisserman 2012): L1-normalise, then square root.
        descriptors = np.sqrt(descriptors / np.maximum(descriptors.sum(axis=1, keepdims=True), 1e-7))
    lab = cv2.cvtColor(cv2.blur(pixels, (COLOUR_PATCH, COLOUR_PATCH)), cv2.COLOR_RGB2LAB)
    columns = np.clip(points[:, 0].round().astype(int), 0, width - 1)
    rows = np.clip(points[:, 1].round().astype(int), 0, height - 1)
    colours = lab[rows, columns].astype(np.float32)
    return LocalFeatures(kind, points, (width, height), descriptors.astype(np.uint8 if kind == "orb" else np.float32), colours)
