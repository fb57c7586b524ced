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
