"""How much of the provider's answer window is left, and whether the answer met it."""

from __future__ import annotations

import dataclasses
import time

from silo_router.conf import conf


@dataclasses.dataclass(frozen=True)
class Deadline:
    """The answer window of one request, measured from its arrival.

    Time already spent before arrival is estimated from the provider's send timestamp
    (whole seconds, and subject to clock skew), so that estimate is clamped to
    ``MAX_CLOCK_ALLOWANCE``. It shortens the budget a synchronous forward may spend,
    but it does not decide whether the deadline was missed: a timestamp truncated to
    the second overstates the transit by up to a second, which would report misses that
    did not happen. :meth:`missed` counts what was measured, from arrival to answer.
    """

    arrived: float
    in_transit: float
    window: float
    margin: float
    #: When the request arrived (epoch seconds, ``time.time()``): what travels to regions.
    received_at: float = 0.0

    @classmethod
    def start(cls, *, sent_at: float | None, now: float | None = None) -> Deadline:
        wall = time.time() if now is None else now
        in_transit = 0.0 if sent_at is None else min(max(wall - sent_at, 0.0), conf.MAX_CLOCK_ALLOWANCE)
        return cls(
            arrived=time.monotonic(),
            in_transit=in_transit,
            window=conf.RESPONSE_DEADLINE,
            margin=conf.SYNC_SAFETY_MARGIN,
            received_at=wall,
        )

    def elapsed(self) -> float:
        """Seconds since arrival."""
        return time.monotonic() - self.arrived

    def remaining(self) -> float:
        """Seconds left to spend before answering, after the safety margin (may be <= 0)."""
        return self.window - self.in_transit - self.elapsed() - self.margin

    def missed(self, elapsed: float | None = None) -> bool:
        """Whether an answer given ``elapsed`` seconds after arrival (default: now) is past the window."""
        return (self.elapsed() if elapsed is None else elapsed) > self.window
