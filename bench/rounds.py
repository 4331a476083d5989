"""Side-by-side rates taken in interleaved rounds (A, B, A, B, ...), so that a change
in machine load lands on every side alike instead of on whichever block ran during it.
A ratio is printed as the median of the per-round ratios with their range."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Ratio:
    """One side's rate over another's, round by round."""

    numerator: str
    denominator: str
    per_round: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.per_round) if self.per_round else float("nan")

    @property
    def low(self) -> float:
        return min(self.per_round) if self.per_round else float("nan")

    @property
    def high(self) -> float:
        return max(self.per_round) if self.per_round else float("nan")

    def text(self, target: float | None = None) -> str:
        """``1.23x (1.10..1.31 over 5 rounds)``, with the target and whether the median meets it."""
        out = f"{self.median:.2f}x ({self.low:.2f}..{self.high:.2f} over {len(self.per_round)} rounds)"
        if target is not None:
            out += f"  target >= {target:g}x: {'met' if self.median >= target else 'NOT met'}"
        return out


@dataclass
class RatioReport:
    """Rates (units per second) of each side, one per round, in the order they ran."""

    rates: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rounds(self) -> int:
        return min((len(v) for v in self.rates.values()), default=0)

    def median(self, side: str) -> float:
        return statistics.median(self.rates[side]) if self.rates.get(side) else float("nan")

    def ratio(self, numerator: str, denominator: str) -> Ratio:
        """``numerator`` over ``denominator``, each round's pair divided: both ran in that round."""
        pairs = zip(self.rates[numerator], self.rates[denominator], strict=False)
        return Ratio(numerator, denominator, [a / b for a, b in pairs if b > 0])


def interleaved(
    sides: dict[str, Callable[[], float]], rounds: int, warmup: bool = True, budget_s: float | None = None
) -> RatioReport:
    """Runs every side once per round, in the order given (A, B, A, B, ...), each call
    returning its rate for that round. ``warmup`` runs each side once untimed first
    (model sessions, caches and thread pools start up outside the numbers). ``budget_s``
    stops after the round that passes it, keeping at least one round."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if warmup:
        for run in sides.values():
            run()
    report = RatioReport({name: [] for name in sides})
    start = time.perf_counter()
    for _ in range(rounds):
        for name, run in sides.items():
            report.rates[name].append(run())
        if budget_s is not None and time.perf_counter() - start > budget_s:
            break
    report.seconds = time.perf_counter() - start
    return report
