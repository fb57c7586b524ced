"""The people import's fast paths, checked against the aggregates, on both stores.

A new person's events are made from templates (commands/fresh_events.py), an unchanged
person is recognised from its latest email event alone, and on PostgreSQL the next batch
is read while this one is written (commands/people_import.py). Whatever path a row
takes, the log must hold what the aggregates would have stored, and the aggregates read
back from it must be the directory the file describes."""

import base64
import os
import uuid
from typing import Any

from aggregates import EmailIndex, Person
from aggregates.ids import NAMESPACE, derived_id_bytes
from api.config import Config
from commands.application import OpsApplication, PersonRow
from commands.people_import import IMPORTER
from commands.tokens import admin_meta
from tests.conftest import new_id

# Emails whose JSON needs escaping, or that a bytes %-format would misread.
AWKWARD = ['o"brien{}@example.com', "back\\slash{}@example.com", "per%cent{}%s@example.com"]


def stored_events(app: OpsApplication, originator_id: uuid.UUID) -> list[Any]:
    return list(app.recorder.select_events(originator_id))


def head(app: OpsApplication) -> int:
    return app.recorder.max_notification_id() or 0


def test_a_new_persons_events_are_the_aggregates_events_byte_for_byte(services):
    app = services.app
    tag = uuid.uuid4().hex[:6]
    emails = [f"Ada.{tag}@Example.com", f"zoë.{tag}@exämple.org"]
    emails += [pattern.format(tag) for pattern in AWKWARD]
    rows = [PersonRow(n + 2, new_id(), email) for n, email in enumerate(emails)]
    report = app.import_people(rows)
    assert (report.created, report.changed, report.unchanged) == (len(rows), 0, 0)

    meta = admin_meta(IMPORTER)
    for row in rows:
        person = Person(person_id=row.person_id, email=row.email, meta=meta)
        index = EmailIndex(email=row.email)
        index.add(row.person_id)
        expected = [app.mapper.to_stored_event(e) for e in person.collect_events()]
        expected += [app.mapper.to_stored_event(e) for e in index.collect_events()]
        actual = stored_events(app, person.id) + stored_events(app, index.id)
        assert len(actual) == len(expected) == 3
        for want, got in zip(expected, actual, strict=True):
            assert (got.originator_id, got.originator_version, got.topic) == (
                want.originator_id,
                want.originator_version,
                want.topic,
            )
            # Only the moment of creation may differ.
            want_time = app.mapper.to_domain_event(want).timestamp.isoformat().encode()
            got_time = app.mapper.to_domain_event(got).timestamp.isoformat().encode()
            assert got.state == want.state.replace(want_time, got_time)


def test_a_mixed_file_imports_and_reimports_as_the_aggregates_would(services):
    """New people (alone, sharing an email within a batch, taking an email that is
    already indexed or that another row of the batch gives up), unchanged people,
    changed emails, and an id twice (in one batch, and in two), over batches of three:
    then the directory the file describes, again, writes nothing."""
    app = services.app
    tag = uuid.uuid4().hex[:6]
    ids = {name: new_id() for name in "abcdefghxz"}

    def email(name: str) -> str:
        return f"{name}.{tag}@example.com"

    app.import_people([PersonRow(n + 2, ids[name], email(name)) for n, name in enumerate("abc")])
    rows = [
        PersonRow(2, ids["a"], email("a").upper()),  # unchanged (case only)
        PersonRow(3, ids["c"], email("c2")),  # changed: gives up c...
        PersonRow(4, ids["h"], email("c")),  # ...which a new person takes
        PersonRow(5, ids["e"], email("b")),  # new, with an email b already has
        PersonRow(6, ids["f"], email("fg")),  # new, sharing an email with g
        PersonRow(7, ids["g"], email("fg")),
        PersonRow(8, ids["d"], email("d")),  # new, an email of its own
        PersonRow(9, ids["x"], email("x1")),  # new...
        PersonRow(10, ids["b"], email("b")),  # unchanged
        PersonRow(11, ids["x"], email("x2")),  # ...and changed in the next batch
        PersonRow(12, ids["z"], email("z1")),  # new...
        PersonRow(13, ids["z"], email("z2")),  # ...and changed in the same batch
        PersonRow(14, ids["d"], email("d2")),  # changed...
        PersonRow(15, ids["d"], email("d")),  # ...and back, in the same batch
    ]
    report = app.import_people(rows, batch_size=3)
    assert (report.created, report.changed, report.unchanged) == (7, 5, 2)

    final = {"a": "a", "b": "b", "c": "c2", "d": "d", "e": "b", "f": "fg", "g": "fg"}
    final |= {"h": "c", "x": "x2", "z": "z2"}
    for name, address in final.items():
        assert app.repository.get(Person.create_id(ids[name])).email.lower() == email(address)
    indexes = {"a": ["a"], "b": ["b", "e"], "c": ["h"], "c2": ["c"], "d": ["d"]}
    indexes |= {"d2": [], "fg": ["f", "g"], "x1": [], "x2": ["x"], "z1": [], "z2": ["z"]}
    for address, names in indexes.items():
        index = app.repository.get(EmailIndex.create_id(email(address)))
        assert sorted(index.person_ids) == sorted(ids[n] for n in names), address

    before = head(app)
    directory = [PersonRow(n + 2, ids[name], email(final[name])) for n, name in enumerate(final)]
    again = app.import_people(directory, batch_size=3)
    assert (again.created, again.changed, again.unchanged) == (0, 0, len(final))
    assert head(app) == before, "a re-import writes nothing"


def test_an_application_that_compresses_and_encrypts_imports_the_same(config: Config):
    key = base64.b64encode(os.urandom(32)).decode()
    env = config.store.eventsourcing_env() | {
        "COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor",
        "CIPHER_TOPIC": "eventsourcing.cryptography:AESCipher",
        "CIPHER_KEY": key,
    }
    app = OpsApplication(env=env)
    try:
        tag = uuid.uuid4().hex[:6]
        people = [new_id() for _ in range(4)]
        rows = [PersonRow(n + 2, p, f"p{n}.{tag}@example.com") for n, p in enumerate(people)]
        assert app.import_people(rows).created == 4
        [registered] = stored_events(app, Person.create_id(people[0]))
        assert b"example.com" not in registered.state, "the state is sealed"
        before = head(app)
        assert app.import_people(rows).unchanged == 4
        assert head(app) == before
        moved = PersonRow(2, people[0], f"moved.{tag}@example.com")
        assert app.import_people([moved]).changed == 1
        assert app.repository.get(Person.create_id(people[0])).email == moved.email
        gone = app.repository.get(EmailIndex.create_id(rows[0].email))
        assert gone.person_ids == []
        assert app.repository.get(EmailIndex.create_id(moved.email)).person_ids == [people[0]]
    finally:
        app.close()


def test_an_ids_bytes_are_its_uuid5():
    for person_id in (1, 42, 2**63 - 1):
        expected = uuid.uuid5(NAMESPACE, f"person:{person_id}")
        assert Person.create_id(person_id) == expected
        assert Person.id_bytes(person_id) == expected.bytes
    owner = uuid.uuid4()
    assert (
        derived_id_bytes("delivery", owner, "k:1")
        == uuid.uuid5(NAMESPACE, f"delivery:{owner}:k:1").bytes
    )
    for email in (" Ada@Example.COM ", "zoë@exämple.org"):
        expected = uuid.uuid5(NAMESPACE, "email:" + email.strip().lower())
        assert EmailIndex.create_id(email) == expected
        assert EmailIndex.id_bytes(email) == expected.bytes
