"""The API's contract: request bodies and responses as Pydantic models, so that
``/openapi.json`` describes every body and answer and a generated client works."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, Field

#: An item id: 1-512 characters, none of them a control character.
ITEM_ID_PATTERN = r"^[^\x00-\x1f\x7f]{1,512}$"


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong, in one line, for a person")


class ItemLinks(BaseModel):
    url: str = Field(description="This item in the API")
    thumb_url: str = Field(description="A JPEG thumbnail, at most 320 px a side")
    image_url: str = Field(description="The original photo")


class PhotoOut(BaseModel):
    index: int = Field(description="Position in the lot; 0 is its main photo")
    thumb_url: str
    image_url: str


class ItemOut(ItemLinks):
    id: str
    title: str | None = None
    category: str | None = None
    price: float | None = None
    currency: str | None = None
    sold_at: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict, description="Any other fields: maker, period, material, ...")
    photo_count: int = 1
    photos: list[PhotoOut] = Field(default_factory=list, description="The lot's photos, the main one first")


class Match(BaseModel):
    """Why a verified hit matched: where the two photos agree."""

    inliers: int = Field(description="Local feature matches that one geometric transform explains")
    pairs: list[list[float]] = Field(description="Up to 40 matched points [x, y in the query photo, x, y in the lot's "
                                                 "photo], each 0-1 from the top-left corner")
    region: list[list[float]] | None = Field(description="The lot photo's corners (top-left, top-right, bottom-right, "
                                                         "bottom-left) in the query photo, 0-1")
    colour_difference: float | None = Field(description="Median colour difference (CIELAB a*b*) at the matched points")
    query_photo: int | None = Field(None, description="Which query photo the points are in (0 = the first); for a "
                                                      "search by item, which of that lot's photos")


class Hit(ItemLinks):
    id: str
    score: float = Field(description="Cosine similarity to the query, 1 = identical")
    title: str | None = None
    category: str | None = None
    price: float | None = None
    currency: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
    matched_photo: int = Field(0, description="Which of the lot's photos matched best (thumb_url shows it)")
    photo_count: int = 1
    matched_query: int | None = Field(None, description="For several query photos: which of them matched best")
    sold_at: str | None = None
    inliers: int | None = Field(None, description="For the verified best lots: local feature matches that one geometric "
                                                  "transform explains (absent when not verified)")
    same_object: bool | None = Field(None, description="For the verified best lots: whether the photos show the very "
                                                       "same object, not one like it")
    rank_score: float | None = Field(None, description="What results are ordered by: score + 0.25 x the lot's second-best "
                                                      "photo's score, + 0.05 ln(1 + inliers) when verified")
    match: Match | None = Field(None, description="For a verified hit: the matched points and region")


class PricedNeighbour(BaseModel):
    id: str
    score: float
    price: float
    title: str | None = None
    sold_at: str | None = None
    adjusted_price: float | None = Field(None, description="The price brought to today by the catalogue's price "
                                                           "index (lots with sale dates)")


class Estimate(BaseModel):
    price: float | None = Field(description="The estimate; null when declined (see `declined`)")
    low: float | None = Field(description="Low end of the range")
    high: float | None = Field(description="High end of the range")
    currency: str | None = None
    low_confidence: bool = Field(description="True when no estimate is given")
    best_score: float | None = None
    neighbours: list[PricedNeighbour] = Field(default_factory=list)
    level: float = Field(description="The share of hammer prices the range should hold (e.g. 0.8)")
    calibrated: bool = Field(description="True when that share was measured on this catalogue's own sales "
                                         "(leave-one-out); false: the range is the similar lots' spread")
    declined: str | None = Field(None, description="Why there is no estimate, when there is none")
    meaning: str = Field("", description="What the range means, in words")


class Suggestion(BaseModel):
    value: str
    share: float = Field(description="The value's share of the similarity-weighted vote of the nearest lots")
    support: list[str] = Field(description="Ids of the lots voting for it, closest first")


class Suggestions(BaseModel):
    category: Suggestion | None = Field(None, description="Absent when withheld")
    fields: dict[str, Suggestion] = Field(description="Suggested extra fields; a field is absent when withheld")
    withheld: dict[str, str] = Field(description="Fields not suggested, with the reason")
    title: str | None = Field(None, description="Words the closest lots' titles share")


class SearchResponse(BaseModel):
    query: str = Field(description="What was searched: a file name, a URL, an item id or text")
    results: list[Hit]
    took_ms: float
    estimate: Estimate | None = None
    suggestions: Suggestions | None = Field(None, description="Category and fields suggested for the new item")


class DuplicatePairOut(BaseModel):
    ids: list[str] = Field(description="The two lots")
    photos: list[int] = Field(description="Which photo of each lot (0 = its main photo) showed the same object")
    score: float = Field(description="Cosine similarity of the lots' best-matching photos")
    inliers: int = Field(description="Local feature matches that one geometric transform explains (-1: not verified, "
                                     "the photos are one file's bytes)")
    colour_difference: float | None = None
    identical: bool = Field(False, description="The two photos are byte for byte the same file (a double import)")


class DuplicateGroupOut(BaseModel):
    ids: list[str] = Field(description="Lots that show one object")
    pairs: list[DuplicatePairOut] = Field(description="The verified pairs that joined them: the evidence")


class DuplicatesResponse(BaseModel):
    groups: list[DuplicateGroupOut]
    lots: int = Field(description="Lots checked")
    verified_pairs: int = Field(description="Pairs of lots verified with local features")
    seconds: float = Field(description="How long the check took (a repeated request is answered from memory "
                                       "until the catalogue changes)")


class DuplicatesRunning(BaseModel):
    status: Literal["running"] = "running"
    lots_checked: int = Field(description="Lots checked so far")
    lots: int = Field(description="Lots to check (0 while starting)")


class ItemPage(BaseModel):
    items: list[ItemOut]
    total: int
    page: int
    page_size: int


class CategoryCount(BaseModel):
    category: str
    items: int


class Health(BaseModel):
    status: str
    items: int
    model_id: str | None = None


class Removed(BaseModel):
    removed: str


class SearchByItem(BaseModel):
    item_id: str = Field(min_length=1, max_length=512, description="An item in the catalogue (more like this)")


class SearchByUrl(BaseModel):
    url: AnyHttpUrl = Field(description="An http(s) URL of a photo on a public host")


class SearchByText(BaseModel):
    text: str = Field(min_length=1, max_length=1000, pattern=r"\S", description='A description, e.g. "red armchair"')


def errors(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI responses for error statuses, each with the {"error": ...} body."""
    return {status: {"model": ErrorBody} for status in statuses}
