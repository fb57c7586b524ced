"""Events read back are the events the library itself would read: every event of the
0.1 store and of a log written now decodes, through the app, to the same domain event
as with the library's own JSON transcoder (the app decodes with orjson). And what the
app writes is, byte for byte, what the library's transcoder writes (it encodes with
orjson too)."""

import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import JSONTranscoder, Mapper
from falcon import testing

from aggregates import Delivery
from api.app import create_app
from api.bootstrap import Services, build_services
from api.config import Config
from commands.library_internals import unseal
from commands.unit_of_work import UnitOfWork
from tests.conftest import Directory, add_member_body, set_code_body

LEGACY = Path(__file__).parent / "data" / "legacy_v0_1"


def library_mapper(app: Any) -> Mapper[Any]:
    """The library's own JSON mapper, with the application's transcodings."""
    transcoder = JSONTranscoder()
    app.register_transcodings(transcoder)
    return Mapper(transcoder=transcoder)


def assert_decoded_alike(services: Services) -> int:
    ours, theirs = services.app.mapper, library_mapper(services.app)
    count = 0
    for stored in services.app.recorder.select_notifications(start=1, limit=100_000):
        mine, library = ours.to_domain_event(stored), theirs.to_domain_event(stored)
        # What the app stored (its delivery records made from a template, the rest
        # encoded with orjson) is what the library writes for that event.
        assert unseal(ours, stored.state) == theirs.to_stored_event(library).state
        assert type(mine) is type(library)
        assert mine.__dict__ == library.__dict__, stored
        assert {k: type(v) for k, v in mine.__dict__.items()} == {
            k: type(v) for k, v in library.__dict__.items()
        }
        count += 1
    return count


def test_the_01_store_decodes_as_the_library_decodes_it(tmp_path: Path) -> None:
    shutil.copy(LEGACY / "ops.db", tmp_path / "ops.db")
    services = build_services(Config(database_url=f"sqlite:///{tmp_path}/ops.db"))
    try:
        assert assert_decoded_alike(services) >= 40
    finally:
        services.close()


def test_a_log_written_now_decodes_as_the_library_decodes_it(directory: Directory) -> None:
    client = testing.TestClient(create_app(directory.services))
    for body in (
        add_member_body(directory.person_id, directory.community_id),
        set_code_body(directory.person_id, code="SPRING-ÄÖ-☃"),
        set_code_body(directory.person_id, code=None),
        add_member_body(email=directory.shared_email, community=directory.community_id),
        add_member_body(directory.person_id, 10**30),
    ):
        path = "/communities/add" if "communityId" in body["data"]["attributes"] else "/code"
        client.simulate_post(
            "/api/v1/ops/people" + path,
            json=body,
            headers=directory.headers(key=str(uuid.uuid4()), **{"X-Ops-Workflow": "w ☃"}),
        )
    assert assert_decoded_alike(directory.services) >= 12


def test_typed_values_anywhere_decode_as_the_library_decodes_them(services: Services) -> None:
    # What events hold today has typed values at the top only; a future field may nest them.
    moment = datetime(2026, 11, 26, 1, 2, 3, 456789, tzinfo=UTC)
    document = {
        "timestamp": moment,
        "owner": uuid.uuid4(),
        "nested": {"at": [moment, {"id": uuid.uuid4()}], "word": "_type_", "n": 10**30},
        "lookalike": {"_type_": "uuid_hex", "_data_": "x", "extra": 1},
        "text": 'a "_type_" in a string',
    }
    library = library_mapper(services.app).transcoder
    for value in (document, [moment, document], {"only": moment}, {"plain": [1, "two"]}):
        data = library.encode(value)
        assert services.app.mapper.transcoder.decode(data) == library.decode(data)


def test_a_replay_reads_each_stored_delivery_as_its_aggregate_holds_it(tmp_path: Path) -> None:
    """A replay answers from the delivery record's stored event without rebuilding the
    aggregate: for every delivery of the 0.1 store, the fields it reads are the
    aggregate's."""
    shutil.copy(LEGACY / "ops.db", tmp_path / "ops.db")
    services = build_services(Config(database_url=f"sqlite:///{tmp_path}/ops.db"))
    try:
        notifications = services.app.recorder.select_notifications(start=1, limit=100_000)
        deliveries = {n.originator_id for n in notifications if "Delivery.Recorded" in n.topic}
        assert len(deliveries) >= 5
        for delivery_id in deliveries:
            uow = UnitOfWork(services.app.repository)
            uow.read_many([delivery_id])
            recorded = uow.created_state(delivery_id)
            delivery = uow.get(Delivery, delivery_id)
            assert recorded is not None and delivery is not None
            assert (recorded["fingerprint"], recorded["status"], recorded["body"]) == (
                delivery.fingerprint,
                delivery.status,
                delivery.body,
            )
        missing = uuid.uuid4()
        uow = UnitOfWork(services.app.repository)
        uow.read_many([missing])
        assert uow.created_state(missing) is None
    finally:
        services.close()


class Word(str):
    """A str subclass: written by the library's encoder, whatever orjson would do."""


def test_the_app_writes_any_document_as_the_librarys_transcoder_writes_it(
    services: Services,
) -> None:
    moment = datetime(2026, 11, 26, 1, 2, 3, 456789, tzinfo=UTC)
    awkward = [
        {"timestamp": moment, "meta": {"actor": "a ☃", "ids": (1, 2), "none": None}},
        {"nested": [{"at": moment, "id": uuid.uuid4()}, [moment]], "flag": False},
        {"controls": "".join(map(chr, range(32))) + '\x7f"\\\u2028\u00e9'},
        {"big": 10**30, "small": -(2**63), "edge": 2**64 - 1},
        {"floats": [0.1, 1e16, 1e-7, 2.5]},
        {"lone surrogate": "\ud800"},
        {Word("key"): Word("value")},
        {1: "an integer key"},
        [moment, "top-level list"],
        "a string",
    ]
    ours, library = services.app.mapper.transcoder, library_mapper(services.app).transcoder
    for document in awkward:
        try:
            expected = library.encode(document)
        except UnicodeEncodeError:  # what the library refuses, the app refuses too
            with pytest.raises(UnicodeEncodeError):
                ours.encode(document)
            continue
        assert ours.encode(document) == expected, document
