"""Suggested attributes for a new item: a similarity-weighted vote among its nearest lots, per field.

Every field the catalogue has (the category and each extra field) is voted on by the nearest lots, each
weighting its value by its similarity raised to ``SHARPNESS``; a lot without a value for the field votes
for nothing, so a field most neighbours lack gets a small share. A suggestion is made only when the share
and the best match's similarity reach the field's thresholds, which ``fit_field`` calibrates leave-one-out
so that the suggestions it makes are right at least ``TARGET_ACCURACY`` of the time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lookalike.engine.results import SearchHit
    from lookalike.store import Item

SHARPNESS = 4.0
#: The accuracy suggestions must reach, leave-one-out, for a field to be suggested.
TARGET_ACCURACY = 0.9
#: A threshold pair must answer at least this many leave-one-out cases to count as measured.
MIN_ANSWERED = 20
#: A field with more distinct values than this share of the lots having it is an identifier or free text.
MAX_DISTINCT_SHARE = 0.5
SHARE_STEPS = tuple(round(step, 2) for step in np.arange(0.3, 1.0, 0.05))
SCORE_QUANTILES = tuple(np.arange(0.0, 0.9, 0.1))


def normalise(value) -> str | None:
    """The value as compared in a vote: trimmed, case-folded, numbers written one way ("1900" = 1900 = 1900.0)."""
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        number = float(text)
        if np.isfinite(number):
            return str(int(number)) if number.is_integer() else repr(number)
    except ValueError:
        pass
    return re.sub(r"\s+", " ", text).casefold()


def field_value(lot: SearchHit | Item, name: str):
    return lot.category if name == "category" else lot.extra.get(name)


@dataclass
class Suggestion:
    value: str
    share: float
    support: list[str]


@dataclass
class Vote:
    suggestion: Suggestion | None
    best_score: float


def vote(neighbours: Sequence[SearchHit], name: str, sharpness: float = SHARPNESS) -> Vote:
    """The winning value of field ``name`` among ``neighbours``: its share of all their weight, and the lots
    voting for it (shown as the closest of them wrote it)."""
    if not neighbours:
        return Vote(None, -1.0)
    totals: dict[str, float] = {}
    shown: dict[str, str] = {}
    supporters: dict[str, list[str]] = {}
    weight_sum = 0.0
    for hit in neighbours:
        weight = max(hit.score, 0.0) ** sharpness
        weight_sum += weight
        raw = field_value(hit, name)
        key = normalise(raw)
        if key is None:
            continue
        totals[key] = totals.get(key, 0.0) + weight
        shown.setdefault(key, str(raw).strip())
        supporters.setdefault(key, []).append(hit.id)
    best_score = max(hit.score for hit in neighbours)
    if not totals or weight_sum <= 0:
        return Vote(None, best_score)
    winner = max(totals, key=lambda key: (totals[key], -neighbours_rank(supporters[key], neighbours)))
    return Vote(Suggestion(shown[winner], totals[winner] / weight_sum, supporters[winner]), best_score)


def neighbours_rank(ids: list[str], neighbours: Sequence[SearchHit]) -> int:
    order = {hit.id: rank for rank, hit in enumerate(neighbours)}
    return min(order[item_id] for item_id in ids)


@dataclass
class FieldCalibration:
    """When a field is suggested: thresholds found leave-one-out, and what they gave; or why it never is."""

    min_share: float | None
    min_score: float | None
    cases: int
    answered: float = 0.0
    accuracy: float = 0.0
    withheld: str | None = None

    def allows(self, found: Vote) -> bool:
        return (self.withheld is None and found.suggestion is not None and found.suggestion.share >= self.min_share
                and found.best_score >= self.min_score)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FieldCase:
    """One lot's field voted on by its neighbours, itself left out."""

    truth: str
    vote: Vote

    @property
    def correct(self) -> bool:
        return self.vote.suggestion is not None and normalise(self.vote.suggestion.value) == self.truth


def fit_field(cases: list[FieldCase], distinct: int, having: int, target: float = TARGET_ACCURACY) -> FieldCalibration:
    """The loosest thresholds (most suggestions made) whose leave-one-out accuracy reaches ``target``."""
    if having and distinct > MAX_DISTINCT_SHARE * having and distinct > 10:
        return FieldCalibration(None, None, len(cases), withheld=f"{distinct} distinct values among {having} lots: "
                                "an identifier or free text, not something to vote on")
    if len(cases) < MIN_ANSWERED:
        return FieldCalibration(None, None, len(cases), withheld=f"only {len(cases)} lots have this field: too few "
                                "to measure how often a suggestion would be right")
    shares = np.array([case.vote.suggestion.share if case.vote.suggestion else 0.0 for case in cases])
    scores = np.array([case.vote.best_score for case in cases])
    correct = np.array([case.correct for case in cases])
    best = None
    for min_score in sorted({float(np.quantile(scores, q)) for q in SCORE_QUANTILES}):
        for min_share in SHARE_STEPS:
            answered = (shares >= min_share) & (scores >= min_score)
            count = int(answered.sum())
            if count < MIN_ANSWERED:
                continue
            accuracy = float(correct[answered].mean())
            if accuracy >= target and (best is None or count > best[0]):
                best = (count, min_share, min_score, accuracy)
    if best is None:
        return FieldCalibration(None, None, len(cases), accuracy=float(correct.mean()),
                                withheld=f"suggestions from similar lots were never right {target:.0%} of the time "
                                         f"on this catalogue (leave-one-out)")
    count, min_share, min_score, accuracy = best
    return FieldCalibration(float(min_share), min_score, len(cases), count / len(cases), accuracy)


@dataclass
class Suggestions:
    category: Suggestion | None = None
    fields: dict[str, Suggestion] = field(default_factory=dict)
    #: Fields not suggested, with the reason.
    withheld: dict[str, str] = field(default_factory=dict)
    title: str | None = None

    def to_dict(self) -> dict:
        body: dict = {"fields": {name: asdict(found) for name, found in self.fields.items()}, "withheld": self.withheld,
                      "title": self.title}
        if self.category is not None:
            body["category"] = asdict(self.category)
        return body


def suggest(neighbours: Sequence[SearchHit], calibrations: dict[str, FieldCalibration]) -> Suggestions:
    """Suggestions for every calibrated field; a field whose vote is weak or whose matches are far is withheld."""
    result = Suggestions(title=suggest_title(neighbours))
    for name, calibration in calibrations.items():
        found = vote(neighbours, name)
        if calibration.allows(found):
            if name == "category":
                result.category = found.suggestion
            else:
                result.fields[name] = found.suggestion
        elif calibration.withheld:
            result.withheld[name] = calibration.withheld
        elif found.suggestion is None:
            result.withheld[name] = "no similar lot has this field"
        elif found.best_score < calibration.min_score:
            result.withheld[name] = (f"the closest lot scores {found.best_score:.2f}, under the {calibration.min_score:.2f} "
                                     "where suggestions become reliable")
        else:
            result.withheld[name] = (f"similar lots disagree: {found.suggestion.value!r} has {found.suggestion.share:.0%} "
                                     f"of the vote, {calibration.min_share:.0%} needed")
    return result


_WORD = re.compile(r"[\w'-]+")


def suggest_title(neighbours: Sequence[SearchHit], sharpness: float = SHARPNESS) -> str | None:
    """The words of the closest lot's title that another lot's title shares and at least half of the similar lots'
    weight uses, in its order ("Bentwood chair, No. 14" and "Thonet bentwood chair" -> "Bentwood chair"); None when none are shared."""
    titled = [hit for hit in neighbours if hit.title]
    if len(titled) < 2:
        return None
    weights = np.array([max(hit.score, 0.0) ** sharpness for hit in titled])
    if weights.sum() <= 0:
        return None
    word_sets = [{word.casefold() for word in _WORD.findall(hit.title)} for hit in titled]
    kept = []
    for word in _WORD.findall(titled[0].title):
        using = [weight for weight, words in zip(weights, word_sets) if word.casefold() in words]
        if len(using) >= 2 and sum(using) >= 0.5 * weights.sum():
            kept.append(word)
    if not kept:
        return None
    text = " ".join(kept)
    return text[0].upper() + text[1:]
