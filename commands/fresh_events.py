"""Events made without their aggregates, byte for byte as the library would store them,
at a fraction of the cost: a new person with an email no one has yet (what `Person(...)`,
`EmailIndex(...)` and `index.add(...)` followed by the library's mapper would store: the
import of a million people spent most of its time constructing aggregates and encoding
their events), and a call's delivery record (what `Delivery(...)` would store: a tenth
of a new call's CPU went into constructing that aggregate and mapping its one event).

The bytes are not written out here by hand: at the start the library itself
makes one prototype of each event, with sentinel values, and maps it; the state it
stores is cut at the sentinels into a template. A row's events are the templates with the
row's values put back, each value encoded as the transcoder encodes it, then compressed
and encrypted as the mapper would (if the application has a compressor or a cipher). So
a change in the aggregates' fields or in the library's event layout changes the templates
with it; tests/test_directory_import.py and tests/test_event_decoding.py compare both
paths byte for byte.

It relies on eventsourcing 9.5.6 behaviour beyond its documented API, through
commands/library_internals.py: that Mapper.to_stored_event transcodes the event's
attributes whole (so each value's encoding appears verbatim in the state), then
compresses and encrypts (`seal`), and that an event's timestamp is stored as its
isoformat (`encoded_timestamp`). tests/test_library_contract.py checks both."""

from collections.abc import Callable
from operator import itemgetter
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper

from aggregates import Delivery, EmailIndex, Person
from commands.bulk import EventRow
from commands.library_internals import encoded_timestamp, is_sealed, seal, transcoder_of

# Values no real row has, each found at most once in a prototype's stored state.
SENTINEL_ID = 7_304_918_265_530_174_829
SENTINEL_EMAIL = "sentinel.q7Zk3v@template.invalid"
SLOTS = ("timestamp", "person_id", "email")  # the order of a row's values
SENTINEL_OWNER = UUID("7d3f0c52-9b1e-4a6d-8c2f-5e0a9b7c3d41")
SENTINEL_META = {"sentinel": SENTINEL_EMAIL}
DELIVERY_TEXTS = ("key", "fingerprint", "operation", "body", "outcome")


class StateTemplate:
    """One event's stored state as a bytes %-format, with a %b where each value goes."""

    def __init__(self, state: bytes, sentinels: tuple[bytes, ...]) -> None:
        found = []
        for slot, sentinel in enumerate(sentinels):
            if (count := state.count(sentinel)) > 1:
                raise RuntimeError(f"sentinel {sentinel!r} is {count} times in {state!r}")
            if count:
                found.append((state.index(sentinel), slot, sentinel))
        parts, start = [], 0
        for at, _, sentinel in sorted(found):
            parts.append(state[start:at].replace(b"%", b"%%"))
            start = at + len(sentinel)
        parts.append(state[start:].replace(b"%", b"%%"))
        self.format = b"%b".join(parts)
        slots = [slot for _, slot, _ in sorted(found)]
        # itemgetter of two or more indexes gives the tuple % needs, in C.
        self._pick: Callable[[tuple[bytes, ...]], tuple[bytes, ...]] = (
            itemgetter(*slots) if len(slots) > 1 else lambda values: tuple(values[s] for s in slots)
        )

    def fill(self, values: tuple[bytes, ...]) -> bytes:
        return self.format % self._pick(values)


class NewPersonEvents:
    """Registered (the person), then Created and PersonIndexed (its email's index)."""

    def __init__(self, mapper: Mapper[UUID], meta: dict[str, Any]) -> None:
        self._mapper = mapper
        self._sealed = is_sealed(mapper)
        self._encode = transcoder_of(mapper).encode
        plain = Mapper(transcoder=transcoder_of(mapper))  # the templates hold unsealed state
        person = Person(person_id=SENTINEL_ID, email=SENTINEL_EMAIL, meta=meta)
        index = EmailIndex(email=SENTINEL_EMAIL)
        index.add(SENTINEL_ID)
        self._events = []
        for event in [*person.collect_events(), *index.collect_events()]:
            stored = plain.to_stored_event(event)
            sentinels = (
                encoded_timestamp(event.timestamp),
                str(SENTINEL_ID).encode(),
                SENTINEL_EMAIL.encode(),
            )
            template = StateTemplate(stored.state, sentinels)
            self._events.append((stored.originator_version, stored.topic, template))

    @staticmethod
    def timestamp() -> bytes:
        """Now, as the events' timestamps are stored (the caller takes one a batch: the
        aggregates would give each event its own, microseconds apart)."""
        return encoded_timestamp(Person.Registered.create_timestamp())  # type: ignore[attr-defined]

    def rows(
        self, person_id: int, email: str, person: bytes, index: bytes, timestamp: bytes
    ) -> list[EventRow]:
        """This person's events: `person` and `index` are Person.id_bytes(person_id) and
        EmailIndex.id_bytes(email), which the caller has derived already."""
        values = (
            timestamp,
            str(person_id).encode(),
            self._encode(email)[1:-1],  # a JSON string, unquoted
        )
        (v1, topic1, registered), (v2, topic2, created), (v3, topic3, indexed) = self._events
        rows = [
            (person, v1, topic1, registered.fill(values)),
            (index, v2, topic2, created.fill(values)),
            (index, v3, topic3, indexed.fill(values)),
        ]
        if self._sealed:
            mapper = self._mapper
            return [(o, v, t, seal(mapper, state)) for o, v, t, state in rows]
        return rows


class DeliveryRecords:
    """A call's delivery record: Delivery.Recorded, the one event of a `Delivery`."""

    def __init__(self, mapper: Mapper[UUID]) -> None:
        self._mapper = mapper
        self._sealed = is_sealed(mapper)
        self._encode = encode = transcoder_of(mapper).encode
        plain = Mapper(transcoder=transcoder_of(mapper))  # the template holds unsealed state
        texts = {name: f"{name}.{SENTINEL_EMAIL}" for name in DELIVERY_TEXTS}
        prototype = Delivery(owner=SENTINEL_OWNER, status=SENTINEL_ID, meta=SENTINEL_META, **texts)
        [event] = prototype.collect_events()
        stored = plain.to_stored_event(event)
        sentinels = (
            encoded_timestamp(event.timestamp),
            SENTINEL_OWNER.hex.encode(),  # a uuid is stored as its hex
            str(SENTINEL_ID).encode(),
            encode(SENTINEL_META),
            *(encode(texts[name]) for name in DELIVERY_TEXTS),
        )
        self._template = StateTemplate(stored.state, sentinels)
        self.version, self.topic = stored.originator_version, stored.topic

    def state(self, owner: UUID, status: int, meta: dict[str, Any], **texts: str) -> bytes:
        """The stored state of Delivery(owner, status, meta, key, fingerprint, operation,
        body, outcome), timestamped now (as Delivery(...) would)."""
        encode = self._encode
        timestamp = Delivery.Recorded.create_timestamp()  # type: ignore[attr-defined]
        values = (
            encoded_timestamp(timestamp),
            owner.hex.encode(),
            str(status).encode(),
            encode(meta),
            *(encode(texts[name]) for name in DELIVERY_TEXTS),
        )
        state = self._template.fill(values)
        return seal(self._mapper, state) if self._sealed else state
