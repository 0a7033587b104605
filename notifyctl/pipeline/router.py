"""Which provider account carries a delivery: a weighted pool per channel, one circuit breaker
per account, and a secondary provider that takes over while the pool's breakers are open.

Push tokens belong to a push service (an APNs device token, an FCM registration token: see
addresses.push_address). A push delivery goes through the channel's providers of its token's
service only: `for_service` is the route narrowed to them (APNs providers for `apns:` addresses,
every other provider for the rest), with the same breakers; None when the route has none.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Mapping

from notifyctl.settings import BreakerSettings, ChannelRoute


class CircuitBreaker:
    """closed → open after N consecutive failures or a failure rate over a window;
    open → half-open after a cool-down (one trial request); a success closes it again."""

    def __init__(self, settings: BreakerSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.consecutive = 0
        self.recent: deque[bool] = deque(maxlen=settings.window)
        self.opened_at: float | None = None
        self.trial_in_flight = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self.clock() - self.opened_at >= self.settings.cooldown_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self.trial_in_flight:
            self.trial_in_flight = True
            return True
        return False

    def success(self) -> None:
        self.consecutive = 0
        self.recent.append(True)
        self.opened_at = None
        self.trial_in_flight = False

    def failure(self) -> None:
        self.consecutive += 1
        self.recent.append(False)
        self.trial_in_flight = False
        if self.opened_at is not None:
            self.opened_at = self.clock()  # a failed trial re-opens for another cool-down
            return
        failures = self.recent.count(False)
        rate_tripped = (
            len(self.recent) >= self.settings.window and failures / len(self.recent) >= self.settings.failure_rate
        )
        if self.consecutive >= self.settings.consecutive_failures or rate_tripped:
            self.opened_at = self.clock()


class Router:
    """Picks a provider name for each delivery of one channel."""

    def __init__(
        self,
        route: ChannelRoute,
        breakers: dict[str, CircuitBreaker],
        rng: random.Random | None = None,
        services: Mapping[str, str] | None = None,
    ) -> None:
        """`services`: the push service of each provider of the route that has one (`apns`); the
        others serve every other push address."""
        self.route = route
        self.breakers = breakers
        self.rng = rng or random.Random()
        self.weights = route.weights or [1.0] * len(route.providers)
        self.services = dict(services or {})
        self._narrowed: dict[str, Router | None] = {}

    def for_service(self, service: str) -> Router | None:
        """The router of the route's providers of a push service (this one when all are); None when none is."""
        if service not in self._narrowed:
            self._narrowed[service] = self._narrow(service)
        return self._narrowed[service]

    def _narrow(self, service: str) -> Router | None:
        def serves(name: str) -> bool:
            return self.services.get(name, "fcm") == service

        if all(serves(name) for name in self.route.names):
            return self
        pool = [(name, weight) for name, weight in zip(self.route.providers, self.weights, strict=True) if serves(name)]
        secondary = self.route.secondary if self.route.secondary and serves(self.route.secondary) else None
        if not pool and secondary is None:
            return None
        if not pool:
            pool, secondary = [(secondary or "", 1.0)], None
        names = [name for name, _ in pool]
        route = ChannelRoute(
            providers=names,
            weights=[weight for _, weight in pool],
            secondary=secondary,
            queue_size=self.route.queue_size,
        )
        return Router(route, self.breakers, self.rng, self.services)

    @property
    def provider_names(self) -> list[str]:
        return self.route.names

    def pick(self) -> str:
        """A pool member whose breaker allows it (by weight); else the secondary; else the primary anyway."""
        providers = self.route.providers
        if len(providers) == 1 and self.breakers[providers[0]].opened_at is None:
            return providers[0]  # the common case: one account, breaker closed
        candidates = [
            (n, w)
            for n, w in zip(self.route.providers, self.weights, strict=True)
            if self.breakers[n].state == "closed"
        ]
        if candidates:
            names, weights = zip(*candidates, strict=True)
            chosen: str = self.rng.choices(names, weights=weights)[0]
            return chosen
        for name in self.route.providers:  # half-open: let one trial through to detect recovery
            if self.breakers[name].allow():
                return name
        if self.route.secondary:
            return self.route.secondary
        return self.route.providers[0]
