"""A catalogue-wide price trend, so that older comparables are brought to the date being priced.

Similar lots stand in for repeat sales (the Case-Shiller idea): for a lot and each of its similar sold lots,
the difference of their log prices against the difference of their sale dates; the similarity-weighted
least-squares slope through the origin is the annual log change of prices, shrunk towards no change by its
uncertainty (positive-part James-Stein, with a standard error clustered by lot, since a lot is in several
pairs): a trend the catalogue cannot pin down is not applied in full. A comparable sold ``dt`` years before
the date priced counts at its price times ``exp(rate * dt)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime

import numpy as np

#: Fewer pairs of dated sales than this: no index (prices are not adjusted).
MIN_PAIRS = 30
#: A pair counts by its similarity to this power: only near-identical objects stand in for repeat sales. Pairs of
#: different objects carry no trend and, counted more, shrink the slope towards none (on benchmarks/price_bench.py's
#: earlier half: a true 7% a year read as 1% at power 4, 6.5% at 16, 7.0% at 32).
PAIR_SHARPNESS = 32.0
#: A date priced this long after the newest sale is held there: the trend is not extrapolated further.
MAX_EXTRAPOLATION_YEARS = 1.0


def to_years(sold_at: str | None) -> float | None:
    """A date (2024-03-02, 2024-3-2, 2024-03, 2024, or an ISO timestamp) as fractional years; None if it is not
    one, or its year is not a plausible sale's (1000-2999: "03-12-2024" is not read as the year 3)."""
    when = to_date(sold_at)
    return None if when is None else when.year + (when.timetuple().tm_yday - 1) / 365.25


def to_date(sold_at: str | None) -> date | None:
    """See ``to_years``."""
    if not sold_at:
        return None
    text = str(sold_at).strip()
    try:
        when = datetime.fromisoformat(text).date() if len(text) >= 10 else None
    except ValueError:
        when = None
    if when is None:
        parts = text.split("T")[0].split(" ")[0].split("-")
        if not 1 <= len(parts) <= 3 or len(parts[0]) != 4 or not all(part.isdigit() for part in parts):
            return None
        try:
            # A year alone stands for mid-year, a month for its first day.
            when = date(int(parts[0]), int(parts[1]) if len(parts) > 1 else 7,
                        int(parts[2]) if len(parts) > 2 else (1 if len(parts) > 1 else 2))
        except ValueError:
            return None
    return when if 1000 <= when.year <= 2999 else None


@dataclass
class PriceIndex:
    annual_rate: float
    pairs: int
    newest: float
    #: The slope before shrinking, and its standard error.
    raw_rate: float = 0.0
    standard_error: float = 0.0

    def factor(self, sold_years: float | None, at_years: float | None) -> float:
        """What a price of ``sold_years`` is worth at ``at_years`` (1 when either date is unknown)."""
        if sold_years is None or at_years is None:
            return 1.0
        at_years = min(at_years, self.newest + MAX_EXTRAPOLATION_YEARS)
        return float(np.exp(np.clip(self.annual_rate * (at_years - sold_years), -5.0, 5.0)))

    def to_dict(self) -> dict:
        return asdict(self)


def fit_price_index(pairs: list[tuple[float, float, float, int]], newest: float) -> PriceIndex | None:
    """``pairs``: (log price difference, years between the sales, weight, the priced lot's number) of a lot and
    a similar lot."""
    usable = [pair for pair in pairs if abs(pair[1]) > 1 / 365 and pair[2] > 0]
    if len(usable) < MIN_PAIRS:
        return None
    d_log, d_years, weights, lots = (np.asarray(column) for column in zip(*usable))
    d_log = np.clip(d_log.astype(np.float64), -3.0, 3.0)  # a mismatched pair must not swing the trend
    spread = float(np.sum(weights * d_years**2))
    rate = float(np.sum(weights * d_years * d_log) / spread)
    scores = weights * d_years * (d_log - rate * d_years)
    per_lot = np.bincount(np.unique(lots, return_inverse=True)[1], weights=scores)
    variance = float(np.sum(per_lot**2)) / spread**2
    shrink = max(0.0, 1.0 - variance / rate**2) if rate else 0.0
    return PriceIndex(rate * shrink, len(usable), newest, rate, variance**0.5)
