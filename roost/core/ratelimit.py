"""Token-bucket rate limiting. Pure: the caller passes `now` (seconds, any monotonic origin).

Theory of operation. The bucket holds up to `burst` tokens (bytes) and fills
at `rate` tokens per second. `consume(n, now)` is a reservation: it always
takes the n tokens at once and returns how long the caller must wait before
sending those n bytes; the caller then sleeps that long and sends, without
calling again. A request is admitted as soon as the balance before it is no
longer negative, and its own cost may drive the balance below zero (a debt
that the next requests pay back by waiting). So:

* a request larger than `burst` is never starved: it waits at most for the
  debt of the requests before it;
* several callers sharing one bucket queue up in call order, each wait
  covering the debt of those before it;
* over any long run the bytes admitted equal rate x elapsed + burst + the
  last request, so the average converges on `rate`.

`rate=None` means unlimited: consume never waits and tracks nothing.
`parse_rate` reads a rate as the command lines and configuration write it.
"""

from __future__ import annotations

import math
import re

from roost.errors import UsageError

#: default burst, in seconds' worth of `rate`
DEFAULT_BURST_SECONDS = 1.0


class TokenBucket:
    """`rate` bytes per second (None: unlimited), up to `burst` bytes at once."""

    __slots__ = ("_burst", "_explicit_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float | None, burst: float | None = None) -> None:
        self._rate: float | None = None
        self._burst = 0.0
        self._explicit_burst = burst
        self._tokens = 0.0
        self._last: float | None = None  # `now` of the last refill; None until first use
        self.set_rate(rate)
        self._tokens = self._burst  # start full: the first burst goes out at once

    @property
    def rate(self) -> float | None:
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst

    @property
    def unlimited(self) -> bool:
        return self._rate is None

    def set_rate(self, rate: float | None, now: float | None = None) -> None:
        """Change the rate. Pass `now` to settle the time so far at the old rate;
        without it the time since the last consume is credited at the new rate."""
        if rate is not None and (math.isnan(rate) or rate <= 0):
            raise ValueError(f"rate must be a positive number or None, not {rate!r}")
        if rate is not None and math.isinf(rate):
            rate = None
        if now is not None:
            self._refill(now)
        was_unlimited = self._rate is None
        self._rate = rate
        if rate is None:
            self._burst = 0.0
            return
        burst = self._explicit_burst
        self._burst = float(burst) if burst is not None else rate * DEFAULT_BURST_SECONDS
        if self._burst <= 0:
            raise ValueError(f"burst must be positive, not {burst!r}")
        # leaving unlimited mode starts full; otherwise keep the balance, capped
        self._tokens = self._burst if was_unlimited else min(self._tokens, self._burst)

    def consume(self, n: int, now: float) -> float:
        """Reserve n bytes; return the seconds to wait before sending them (0.0: now)."""
        if n < 0:
            raise ValueError(f"cannot consume {n} bytes")
        if self._rate is None:
            return 0.0
        self._refill(now)
        debt = -self._tokens
        self._tokens -= n
        return debt / self._rate if debt > 0 else 0.0

    def wait_time(self, now: float) -> float:
        """Seconds until a request would be admitted, without reserving anything."""
        if self._rate is None:
            return 0.0
        self._refill(now)
        return -self._tokens / self._rate if self._tokens < 0 else 0.0

    def available(self, now: float) -> float:
        """The balance at `now` (negative: in debt). Unlimited: infinity."""
        if self._rate is None:
            return math.inf
        self._refill(now)
        return self._tokens

    def refund(self, n: int) -> None:
        """Give back a reservation that was not used (e.g. the peer went away)."""
        if self._rate is not None and n > 0:
            self._tokens = min(self._burst, self._tokens + n)

    def _refill(self, now: float) -> None:
        assert self._rate is not None
        if self._last is not None and now > self._last:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        if self._last is None or now > self._last:
            self._last = now  # a clock that steps back is ignored, never credited


def parse_rate(text: str) -> float:
    """'20M' -> bytes/s (binary units: 20 MiB/s); '100mbit' -> 12.5e6 bytes/s."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([kmg]?)(bit|b|)?\s*", text.lower())
    if not match:
        raise UsageError(f"{text!r} is not a rate like 20M or 100mbit")
    try:
        value = float(match.group(1))
    except ValueError:  # "1.2.3"
        raise UsageError(f"{text!r} is not a rate like 20M or 100mbit") from None
    if match.group(3) == "bit":
        return value * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[match.group(2)] / 8
    return value * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2)]
