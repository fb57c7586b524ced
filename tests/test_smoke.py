import orjson

from tests.conftest import add_member_body

ADD = "/api/v1/ops/people/communities/add"


def test_add_member_then_replay(client, directory):
    body = orjson.dumps(add_member_body(directory.person_id, directory.community_id))
    first = client.simulate_post(ADD, body=body, headers=directory.headers("k-1"))
    again = client.simulate_post(ADD, body=body, headers=directory.headers("k-1"))
    assert first.status_code == 200
    assert first.json["data"]["attributes"]["alreadyMember"] is False
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"


def test_a_call_without_a_key_is_recorded_under_a_generated_one(client, directory, services):
    body = orjson.dumps(add_member_body(directory.person_id, directory.community_id))
    assert client.simulate_post(ADD, body=body, headers=directory.headers()).status_code == 200
    events = [
        services.app.mapper.to_domain_event(n)
        for n in services.app.recorder.select_notifications(1, 10_000)
    ]
    [added] = [e for e in events if type(e).__name__ == "MemberAdded"]
    [delivery] = [e for e in events if type(e).__qualname__ == "Delivery.Recorded"]
    assert added.meta["idempotency_key"].startswith("generated-")
    assert added.meta["idempotency_key"] == delivery.key
