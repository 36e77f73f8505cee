"""Price estimates from similar sold lots, with a calibrated range, or a plain "cannot say".

The estimate is the similarity-weighted median of the neighbours' (log) prices; a neighbour's weight is
its cosine similarity raised to a sharpness (calibrated, ``SHARPNESS`` without calibration), so close
matches dominate. The range comes from
split-conformal calibration (``fit_price_calibration``) on the catalogue's own leave-one-out errors:
the signed log error divided by a local scale (how much the neighbours disagree, floored by the band's
typical error), with its quantiles taken per band of best-match similarity. Over lots like the catalogue's,
a range at level 0.8 holds the hammer price 80% of the time. Below the similarity where leave-one-out
error goes out of bounds, or with too few sold lots alike, the estimate is declined with the reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

SHARPNESS = 4.0
#: The sharpnesses calibration chooses from (the one with the least leave-one-out error): the higher, the more
#: the closest lots count against the rest, which pays where a few close lots are the same kind of object.
SHARPNESS_STEPS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
#: The default level of the range: the share of hammer prices it should hold.
LEVEL = 0.8
#: Fewer similar sold lots than this: no estimate.
MIN_COMPARABLES = 3
#: Calibration needs at least this many leave-one-out cases (else the range is the neighbours' spread, uncalibrated).
MIN_CALIBRATION = 30
#: A band of best-match similarity needs this many cases to get its own quantiles.
MIN_BAND = 200
MAX_BANDS = 4
#: Declining: a similarity band is out of bounds when its median absolute % error exceeds this,
#: or does not beat the catalogue-wide median price.
MAX_MDAPE = 0.5
DECLINE_WINDOW = 40


@dataclass
class PricedNeighbour:
    id: str
    score: float
    price: float
    title: str | None = None
    sold_at: str | None = None
    #: The price brought to the estimate's date by the catalogue's price index (None when not adjusted).
    adjusted_price: float | None = None


@dataclass
class PriceEstimate:
    price: float | None
    low: float | None
    high: float | None
    currency: str | None
    low_confidence: bool
    best_score: float | None
    neighbours: list[PricedNeighbour] = field(default_factory=list)
    #: The share of hammer prices the range should hold, and whether that was measured on this catalogue.
    level: float = LEVEL
    calibrated: bool = False
    #: Set when no estimate is given: why, in words.
    declined: str | None = None
    #: What the range means, in words, for display.
    meaning: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PriceBand:
    min_score: float
    #: Quantiles of the normalised signed log error: the range is exp(centre + q * scale).
    q_low: float
    q_high: float
    #: The band's median absolute log error: the floor of the local scale.
    typical_error: float
    cases: int


@dataclass
class PriceCalibration:
    level: float
    decline_below: float
    bands: list[PriceBand]
    cases: int
    #: Why everything is declined, when it is (estimates from looks do not beat the median price here).
    decline_all: str | None = None
    sharpness: float = SHARPNESS

    def band(self, best_score: float) -> PriceBand:
        chosen = self.bands[0]
        for band in self.bands:
            if best_score >= band.min_score:
                chosen = band
        return chosen

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PriceCalibration:
        return cls(data["level"], data["decline_below"], [PriceBand(**band) for band in data["bands"]], data["cases"],
                   data.get("decline_all"), data.get("sharpness", SHARPNESS))


def weighted_quantile(values, weights, quantile: float) -> float:
    """The smallest value whose cumulative weight reaches ``quantile`` of the total."""
    values = np.asarray(values, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if len(values) == 0:
        raise ValueError("no values")
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    total = weights.sum()
    if total <= 0:
        weights, total = np.ones_like(values), float(len(values))
    cumulative = np.cumsum(weights)
    position = int(np.searchsorted(cumulative, quantile * total - 1e-12 * total, side="left"))
    return float(values[min(position, len(values) - 1)])


@dataclass
class Centre:
    """The point estimate in log price, and how much the neighbours disagree around it."""

    log_price: float
    spread: float
    best_score: float


def _log_prices_and_weights(neighbours: list[PricedNeighbour], sharpness: float) -> tuple[np.ndarray, list[float]]:
    prices = np.log([n.adjusted_price if n.adjusted_price is not None else n.price for n in neighbours])
    return prices, [max(n.score, 0.0) ** sharpness for n in neighbours]


def centre(neighbours: list[PricedNeighbour], sharpness: float = SHARPNESS) -> Centre:
    prices, weights = _log_prices_and_weights(neighbours, sharpness)
    middle = weighted_quantile(prices, weights, 0.5)
    spread = weighted_quantile(np.abs(prices - middle), weights, 0.5)
    return Centre(middle, spread, max(n.score for n in neighbours))


def _scale(found: Centre, band: PriceBand) -> float:
    return float(np.hypot(found.spread, band.typical_error)) or 1e-6


def meaning(level: float, calibrated: bool) -> str:
    if calibrated:
        return (f"{level:.0%} range: on this catalogue's own sales (each priced from the others), {level:.0%} of "
                "hammer prices fell inside ranges made this way")
    return ("the similar lots' spread (not calibrated: the catalogue has too few sold lots to measure how "
            "often the range holds)")


def estimate_price(neighbours: list[PricedNeighbour], currency: str | None = None,
                   calibration: PriceCalibration | None = None, level: float = LEVEL,
                   sharpness: float = SHARPNESS) -> PriceEstimate:
    """The estimate from ``neighbours`` (priced, positive, one currency); ``calibration`` sets the range and
    when to decline. Without one the range is the neighbours' weighted spread at ``level``, marked uncalibrated."""
    neighbours = [n for n in neighbours if n.price > 0]
    if calibration is not None:
        level, sharpness = calibration.level, calibration.sharpness
    if not neighbours:
        return PriceEstimate(None, None, None, currency, True, None, [], level,
                             declined="no similar lot in the catalogue has a price")
    found = centre(neighbours, sharpness)
    best = found.best_score
    if len(neighbours) < MIN_COMPARABLES:
        return PriceEstimate(None, None, None, currency, True, best, neighbours, level,
                             declined=f"not enough similar sold lots: {len(neighbours)} with a price, "
                                      f"{MIN_COMPARABLES} needed")
    if calibration is not None and (calibration.decline_all or best < calibration.decline_below):
        reason = calibration.decline_all or (
            f"not enough similar sold lots: the closest scores {best:.2f}, and below {calibration.decline_below:.2f} "
            "estimates on this catalogue miss by too much (leave-one-out)")
        return PriceEstimate(None, None, None, currency, True, best, neighbours, level, calibration is not None,
                             declined=reason)
    if calibration is not None:
        band = calibration.band(best)
        scale = _scale(found, band)
        low, high = found.log_price + band.q_low * scale, found.log_price + band.q_high * scale
    else:
        prices, weights = _log_prices_and_weights(neighbours, sharpness)
        low = weighted_quantile(prices, weights, (1 - level) / 2)
        high = weighted_quantile(prices, weights, (1 + level) / 2)
    calibrated = calibration is not None
    return PriceEstimate(float(np.exp(found.log_price)), float(np.exp(min(low, found.log_price))),
                         float(np.exp(max(high, found.log_price))), currency, False, best, neighbours, level,
                         calibrated, meaning=meaning(level, calibrated))


@dataclass
class PriceCase:
    """One sold lot priced from the others (leave-one-out): the similar lots it was priced from, and the truth."""

    price: float
    neighbours: list[PricedNeighbour]
    #: The median price of the other lots (the naive baseline), for judging where looks stop helping.
    baseline: float
    centre: Centre | None = None


def _conformal(values: np.ndarray, level: float) -> tuple[float, float]:
    """Split-conformal bounds of signed scores, each tail holding (1 - level) / 2: the ceil((n + 1)(1 - tail))-th
    smallest score above and the floor((n + 1) tail)-th below (the extreme scores when n is too small for that)."""
    ordered = np.sort(values)
    count = len(ordered)
    tail = (1 - level) / 2
    upper = min(int(np.ceil(round((count + 1) * (1 - tail), 9))), count)
    lower = max(int(np.floor(round((count + 1) * tail, 9))), 1)
    return float(ordered[lower - 1]), float(ordered[upper - 1])


def _non_increasing(values: list[float]) -> np.ndarray:
    """The closest non-increasing sequence (least squares, pool adjacent violators)."""
    blocks: list[list[float]] = []  # [sum, count]
    for value in values:
        blocks.append([value, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] < blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    return np.concatenate([np.full(int(count), total / count) for total, count in blocks])


def _decline_threshold(cases: list[PriceCase]) -> tuple[float, str | None]:
    """The best-match similarity below which leave-one-out error is out of bounds. Over windows of cases sliding up
    the similarity scale, a window's excess is how far its median error is over MAX_MDAPE or over the naive median
    price's; the excess is smoothed to fall with similarity (isotonic), so one unlucky window among good ones does
    not move the threshold; the threshold is the middle of the highest window still in excess."""
    ordered = sorted(cases, key=lambda case: case.centre.best_score)
    window = min(len(ordered), max(DECLINE_WINDOW, len(ordered) // 10))
    errors = np.array([abs(np.exp(case.centre.log_price) - case.price) / case.price for case in ordered])
    naive = np.array([abs(case.baseline - case.price) / case.price for case in ordered])
    centres, excess = [], []
    for start in range(0, len(ordered) - window + 1, max(1, window // 4)):
        ours = float(np.median(errors[start:start + window]))
        excess.append(max(ours - MAX_MDAPE, ours - float(np.median(naive[start:start + window]))))
        centres.append(ordered[start + window // 2].centre.best_score)
    smoothed = _non_increasing(excess)
    out = np.flatnonzero(smoothed > 0)
    if len(out) == len(smoothed):
        return centres[-1], ("no estimate: on this catalogue, prices estimated from similar lots are not better than "
                             "its median price (leave-one-out)")
    return (centres[out[-1]] if len(out) else -1.0), None


def fit_price_calibration(cases: list[PriceCase], level: float = LEVEL) -> PriceCalibration | None:
    """Calibrate ranges and declining on leave-one-out cases; None when there are too few to measure."""
    if not 0.5 <= level <= 0.99:
        raise ValueError("the level must be from 0.5 to 0.99")
    if len(cases) < MIN_CALIBRATION:
        return None
    sharpness = min(SHARPNESS_STEPS, key=lambda step: np.median([
        abs(np.log(case.price) - centre(case.neighbours, step).log_price) for case in cases]))
    for case in cases:
        case.centre = centre(case.neighbours, sharpness)
    decline_below, decline_all = _decline_threshold(cases)
    answered = [case for case in cases if case.centre.best_score >= decline_below] if not decline_all else cases
    if len(answered) < MIN_CALIBRATION:
        answered = cases
    answered.sort(key=lambda case: case.centre.best_score)
    band_count = max(1, min(MAX_BANDS, len(answered) // MIN_BAND))
    bands = []
    for part in np.array_split(np.arange(len(answered)), band_count):
        chunk = [answered[i] for i in part]
        errors = np.array([np.log(c.price) - c.centre.log_price for c in chunk])
        typical = float(np.median(np.abs(errors))) or 0.01
        scaled = np.array([error / float(np.hypot(c.centre.spread, typical)) for error, c in zip(errors, chunk)])
        q_low, q_high = _conformal(scaled, level)
        min_score = -1.0 if not bands else chunk[0].centre.best_score
        bands.append(PriceBand(min_score, q_low, q_high, typical, len(chunk)))
    return PriceCalibration(level, decline_below, bands, len(cases), decline_all, sharpness)


def absolute_percentage_error(estimate: float, actual: float) -> float:
    return abs(estimate - actual) / abs(actual)
