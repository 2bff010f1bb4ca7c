"""Reconnect delays: exponential backoff with full jitter.

Attempt n waits a uniform random time in [0, min(cap, base * 2**n)], so
that many clients dropped at once do not come back in step.
"""

import random
from typing import Callable


class Backoff:
    def __init__(self, base: float = 0.1, cap: float = 10.0,
                 rand: Callable[[], float] = random.random) -> None:
        self.base = base
        self.cap = cap
        self.rand = rand
        self.attempt = 0

    def next(self) -> float:
        """The delay before the next attempt, in seconds; each call doubles the ceiling."""
        ceiling = min(self.cap, self.base * 2 ** min(self.attempt, 30))
        self.attempt += 1
        return max(0.001, self.rand() * ceiling)

    def reset(self) -> None:
        self.attempt = 0
