"""The per-token limit across processes: each process leases a few ordinals of the
window at a time, so the limit is never exceeded and early refusals stay bounded."""

import uuid
from concurrent.futures import ThreadPoolExecutor

from api.rate_limit import RateLimiter, lease_size

NOW = 1_800_000_000.0  # the start of a window, so every hit below falls in it


def limiters(services, count: int) -> list[RateLimiter]:
    """One limiter per simulated process, all counting in the same store."""
    table = services.config.store.table("ops_rate_limits")
    return [RateLimiter(services.app.recorder.datastore, table=table) for _ in range(count)]


def test_the_limit_holds_across_processes_and_early_refusals_are_bounded(services):
    token, limit, processes = uuid.uuid4(), 1000, limiters(services, 2)
    assert lease_size(limit) == 5

    def call(i: int) -> bool:
        return processes[i % 2].hit(token, limit, now=NOW + (i % 50)) is None

    with ThreadPoolExecutor(8) as pool:
        admitted = sum(pool.map(call, range(1300)))
    assert admitted <= limit
    assert admitted >= limit - len(processes) * (lease_size(limit) - 1)


def test_a_small_limit_is_exact(services):
    token, processes = uuid.uuid4(), limiters(services, 3)
    assert lease_size(5) == 1
    answers = [processes[i % 3].hit(token, 5, now=NOW) for i in range(9)]
    assert answers[:5] == [None] * 5
    assert all(1 <= wait <= 60 for wait in answers[5:])


def test_a_spent_window_refuses_locally_until_the_next_one_or_a_higher_limit(services):
    token, [limiter] = uuid.uuid4(), limiters(services, 1)
    results = [limiter.hit(token, 300, now=NOW + 1) for _ in range(310)]
    assert results.count(None) == 300
    assert limiter.hit(token, 300, now=NOW + 30) == 30, "Retry-After counts to the next window"
    assert limiter.hit(token, 400, now=NOW + 30) is None, "a raised limit asks the store again"
    assert limiter.hit(token, 300, now=NOW + 61) is None, "a new window starts afresh"
