"""A clock the policy tests set by hand."""


class FakeClock:
    """Stands in for ``time.monotonic``: reads ``now``, moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
