"""Query views: several crops of a query photo, each embedded and searched.

A catalogue photo shows the item alone on a plain background; a phone photo
shows it smaller, off-centre, on a table or floor. Searching with the whole
photo plus overlapping crops at 3/4 and 1/2 of its size, and scoring each
catalogue item by its best-matching view, lifts same-item recall@1 from 0.51
to 0.79 on the generated same-item set (benchmarks/README.md), at the cost of
embedding 33 images per query instead of one (19 for ``crops-light``: 0.75).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

QUERY_MODES = {
    "single": (),
    "crops": ((0.75, 4), (0.5, 4)),
    "crops-light": ((0.75, 3), (0.5, 3)),
}
DEFAULT_QUERY_MODE = "crops"


Box = tuple[int, int, int, int]


def view_boxes(size: tuple[int, int], mode: str = DEFAULT_QUERY_MODE) -> list[Box]:
    """(left, top, right, bottom) of each view of an image of ``size``: the whole image first, then a grid of
    crops per (scale, grid) of ``mode``."""
    if mode not in QUERY_MODES:
        raise ValueError(f"unknown query mode {mode!r}; choose one of {', '.join(QUERY_MODES)}")
    width, height = size
    boxes = [(0, 0, width, height)]
    for scale, grid in QUERY_MODES[mode]:
        crop_width, crop_height = max(1, int(width * scale)), max(1, int(height * scale))
        xs = np.linspace(0, width - crop_width, grid).round().astype(int)
        ys = np.linspace(0, height - crop_height, grid).round().astype(int)
        boxes += [(int(x), int(y), int(x) + crop_width, int(y) + crop_height) for y in ys for x in xs]
    return boxes


def query_views(image: Image.Image, mode: str = DEFAULT_QUERY_MODE) -> list[Image.Image]:
    """The views themselves, as images."""
    return [image.crop(box) for box in view_boxes(image.size, mode)]
