"""The per-token limit (SPEC §1): 429 with Retry-After, writing nothing. Through the app
factory, on both stores."""

import time

from tests.helpers import (
    ADD,
    add_body,
    attributes,
    error_of,
    head,
    post,
)


def test_the_per_minute_limit_is_429_with_retry_after(client, directory, services):
    if time.time() % 60 > 50:  # keep all three calls inside one minute window
        time.sleep(61 - time.time() % 60)
    token = directory.issue(rate_limit=2)
    headers = directory.headers(token=token)
    assert attributes(post(client, ADD, add_body(directory), headers))["alreadyMember"] is False
    assert attributes(post(client, ADD, add_body(directory), headers))["alreadyMember"] is True
    before = head(services)
    limited = post(client, ADD, add_body(directory), headers)
    error = error_of(limited, 429, "rate_limited", "too many requests", "Retry after")
    retry_after = int(limited.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert str(retry_after) in error["detail"]
    assert head(services) == before, "a 429 must write nothing to the log"
    # the limit is per token: another token is unaffected
    assert post(client, ADD, add_body(directory), directory.headers()).status_code == 200
