"""How much of the provider's answer window is left."""

from __future__ import annotations

import dataclasses
import time

from silo_router.conf import conf


@dataclasses.dataclass(frozen=True)
class Deadline:
    """The answer window of one request, measured from its arrival.

    Time already spent before arrival is estimated from the provider's send timestamp
    (whole seconds, and subject to clock skew), so that estimate is clamped to
    ``MAX_CLOCK_ALLOWANCE``.
    """

    arrived: float
    in_transit: float
    window: float
    margin: float

    @classmethod
    def start(cls, *, sent_at: float | None, now: float | None = None) -> Deadline:
        wall = time.time() if now is None else now
        in_transit = 0.0 if sent_at is None else min(max(wall - sent_at, 0.0), conf.MAX_CLOCK_ALLOWANCE)
        return cls(
            arrived=time.monotonic(),
            in_transit=in_transit,
            window=conf.RESPONSE_DEADLINE,
            margin=conf.SYNC_SAFETY_MARGIN,
        )

    def elapsed(self) -> float:
        """Seconds since arrival."""
        return time.monotonic() - self.arrived

    def remaining(self) -> float:
        """Seconds left to spend before answering, after the safety margin (may be <= 0)."""
        return self.window - self.in_transit - self.elapsed() - self.margin
