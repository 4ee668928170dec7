"""Backoff with jitter for reconnecting: one policy object, used in one place
(`ParleyClient`'s reconnect loop)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying after a connection is lost.

    Delays grow from `initial_delay` by `multiplier` up to `max_delay`; each is
    drawn between half of it and all of it (jitter), so many clients that lost
    the same server do not come back in step. The client gives up after
    `max_attempts` attempts (None: no limit) or once `give_up_after` seconds
    have passed since the connection was lost (None: no limit), whichever comes
    first, and raises ConnectionLostError.
    """

    initial_delay: float = 0.2
    max_delay: float = 5.0
    multiplier: float = 2.0
    max_attempts: int | None = None
    give_up_after: float | None = 60.0
    random: random.Random = field(default_factory=random.Random, compare=False)

    def __post_init__(self) -> None:
        if self.initial_delay < 0 or self.max_delay < self.initial_delay:
            raise ValueError("need 0 <= initial_delay <= max_delay")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (or None)")

    def delays(self) -> Iterator[float]:
        """The wait before each attempt: the first attempt comes at once."""
        yield 0.0
        ceiling = self.initial_delay
        while True:
            yield self.random.uniform(ceiling / 2, ceiling)
            ceiling = min(ceiling * self.multiplier, self.max_delay)


NO_RETRY = RetryPolicy(max_attempts=1, give_up_after=None)
