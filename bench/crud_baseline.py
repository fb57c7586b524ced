"""A thin CRUD version of add-member, for comparison: the same bearer check, a
read of the idempotency row (a replay answers from it, a different body is a 422),
else one transaction with the membership upsert and the idempotency row. No event
log. bench/run.py serves it under granian (WSGI, its best settings here)."""

import hashlib
import os

import falcon
import orjson
from psycopg_pool import ConnectionPool

SCHEMA = """
CREATE TABLE IF NOT EXISTS crud_memberships (person_id BIGINT, community_id BIGINT,
    PRIMARY KEY (person_id, community_id));
CREATE TABLE IF NOT EXISTS crud_deliveries (owner TEXT, key TEXT, fingerprint TEXT, body BYTEA,
    PRIMARY KEY (owner, key));
"""


class AddMember:
    def __init__(self, pool: ConnectionPool, token_hash: str) -> None:
        self._pool = pool
        self._token_hash = token_hash

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        presented = (req.get_header("Authorization") or "").removeprefix("Bearer ")
        if hashlib.sha256(presented.encode()).hexdigest() != self._token_hash:
            raise falcon.HTTPUnauthorized()
        raw = req.bounded_stream.read()
        fingerprint = hashlib.sha256(raw).hexdigest()
        attrs = orjson.loads(raw)["data"]["attributes"]
        person, community = attrs["personId"], attrs["communityId"]
        key = req.get_header("X-CIO-Idempotency-Key") or ""
        with self._pool.connection() as conn:
            stored = conn.execute(
                "SELECT fingerprint, body FROM crud_deliveries WHERE owner = 'bench' AND key = %s",
                (key,),
            ).fetchone()
            conn.commit()
            if stored is not None:
                if stored[0] != fingerprint:
                    raise falcon.HTTPUnprocessableEntity()
                resp.data = bytes(stored[1])
                return
            inserted = conn.execute(
                "INSERT INTO crud_memberships VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (person, community),
            ).rowcount
            body = orjson.dumps(
                {
                    "data": {
                        "type": "communityMembership",
                        "id": f"{person}:{community}",
                        "attributes": {
                            "personId": person,
                            "communityId": community,
                            "alreadyMember": not inserted,
                        },
                    }
                }
            )
            conn.execute(
                "INSERT INTO crud_deliveries VALUES ('bench', %s, %s, %s) ON CONFLICT DO NOTHING",
                (key, fingerprint, body),
            )
        resp.data = body


def create_app() -> falcon.App:
    # bench/run.py creates SCHEMA before the workers start (concurrent CREATEs race).
    pool = ConnectionPool(os.environ["CRUD_DATABASE_URL"], min_size=4, max_size=20, open=True)
    app = falcon.App()
    app.add_route(
        "/api/v1/ops/people/communities/add", AddMember(pool, os.environ["CRUD_TOKEN_HASH"])
    )
    return app
