"""The state read model: who is in which community, every person's email and
current signup code, and community names. Its tables, its writes and its queries,
and the same derivation in plain Python (`StateModel`: `state --as-of`, the
console's person page, `verify`).

What each event means to the state is one small function in MEANINGS; an
operation's event means what its declaration's `state` says (commands/operations.py).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.utils import get_topic

from aggregates import Community, Delivery, EmailIndex, Person, RejectedCall, Token
from commands.operations import OPERATIONS, StateChange
from projections.handled import Unhandled, check_handled, require_attributes
from projections.projection import TableProjection
from projections.replay import replay
from projections.store import ViewsMixin
from projections.times import iso

# --- what each event means to the state -------------------------------------------

SETTABLE = ("email", "signup_code")  # the person's attributes a change may set


class Registered(NamedTuple):
    person_id: int
    email: str | None


class Sets(NamedTuple):
    attribute: str  # one of SETTABLE
    value: Any


class Joins(NamedTuple):
    community_id: int


class Names(NamedTuple):
    community_id: int | None  # None: a rename (the community is known by its aggregate)
    name: str


Effect = Registered | Sets | Joins | Names


def _registered(event: Any) -> Effect:
    return Registered(event.person_id, event.email)


def _email_changed(event: Any) -> Effect:
    return Sets("email", event.email)


def _community_created(event: Any) -> Effect:
    return Names(event.community_id, event.name)


def _community_renamed(event: Any) -> Effect:
    return Names(None, event.name)


def declared(change: StateChange) -> Callable[[Any], Effect]:
    """What an operation's event means, as its declaration says."""
    if change.joins is not None:
        attribute = change.joins
        return lambda event: Joins(getattr(event, attribute))
    if change.sets is not None and change.sets[0] in SETTABLE:
        target, source = change.sets
        return lambda event: Sets(target, getattr(event, source))
    raise Unhandled(
        f"the state read model cannot apply {change}: a change joins a community or "
        f"sets one of {', '.join(SETTABLE)}"
    )


MEANINGS: dict[type, Callable[[Any], Effect]] = {
    Person.Registered: _registered,
    Person.EmailChanged: _email_changed,
    Community.Created: _community_created,
    Community.Renamed: _community_renamed,
    **{op.event: declared(op.state) for op in OPERATIONS},
}
LEAVES_ALONE = (Delivery, RejectedCall, EmailIndex, Token)
TOPICS = frozenset(get_topic(event) for event in MEANINGS)


def check() -> None:
    """At start-up: every event is handled or left alone; declarations name real attributes."""
    check_handled("state", MEANINGS, LEAVES_ALONE)
    for op in OPERATIONS:
        require_attributes("state", op.event, (op.state.joins, *(op.state.sets or ())[1:]))


# --- the state in plain Python ----------------------------------------------------


@dataclass(frozen=True)
class PersonRecord:
    person_id: int
    email: str | None
    signup_code: str | None
    communities: tuple[int, ...] = ()


@dataclass(frozen=True)
class StateSnapshot:
    """Everyone at one instant: at a projection position, or replayed from the log."""

    position: int
    people: tuple[PersonRecord, ...] = ()  # by person id
    communities: dict[int, str | None] = field(default_factory=dict)  # id -> name

    def person(self, person_id: int) -> PersonRecord | None:
        return next((p for p in self.people if p.person_id == person_id), None)

    def members(self, community_id: int) -> tuple[PersonRecord, ...]:
        return tuple(p for p in self.people if community_id in p.communities)


@dataclass
class PersonState:
    person_id: int
    email: str | None
    signup_code: str | None = None
    communities: set[int] = field(default_factory=set)


@dataclass
class StateModel:
    """The state derived event by event, in plain Python (not the projection's SQL)."""

    topics: frozenset[str] = TOPICS
    people: dict[int, PersonState] = field(default_factory=dict)
    communities: dict[int, str] = field(default_factory=dict)
    person_of: dict[UUID, int] = field(default_factory=dict)  # aggregate id -> person id
    community_of: dict[UUID, int] = field(default_factory=dict)

    def apply(self, position: int, event: Any) -> None:
        effect = MEANINGS[type(event)](event)
        if isinstance(effect, Registered):
            self.person_of[event.originator_id] = effect.person_id
            self.people[effect.person_id] = PersonState(effect.person_id, effect.email)
        elif isinstance(effect, Names):
            if effect.community_id is not None:
                self.community_of[event.originator_id] = effect.community_id
            community_id = self.community_of.get(event.originator_id)
            if community_id is not None:
                self.communities[community_id] = effect.name
        elif (person := self._person(event.originator_id)) is not None:
            if isinstance(effect, Joins):
                person.communities.add(effect.community_id)
            else:
                setattr(person, effect.attribute, effect.value)

    def _person(self, originator_id: UUID) -> PersonState | None:
        person_id = self.person_of.get(originator_id)
        return None if person_id is None else self.people.get(person_id)

    def snapshot(self, position: int) -> StateSnapshot:
        people = tuple(
            PersonRecord(p.person_id, p.email, p.signup_code, tuple(sorted(p.communities)))
            for p in sorted(self.people.values(), key=lambda p: p.person_id)
        )
        return StateSnapshot(position, people, dict(self.communities))


def replayed_state(
    app: Any, *, until: datetime | None = None, stop: int | None = None
) -> StateSnapshot:
    """The state the log gives at an instant (`until`) or a position (`stop`)."""
    model = StateModel()
    replayed = replay(app, [model], until=until, stop=stop)
    return model.snapshot(replayed.position)


def person_as_of(app: Any, person_id: int, moment: datetime) -> PersonState | None:
    """One person as they were at `moment`, from their own events in the log."""
    model = StateModel()
    for stored in app.recorder.select_events(Person.create_id(person_id)):
        event = app.mapper.to_domain_event(stored)
        if event.timestamp <= moment and type(event) in MEANINGS:
            model.apply(0, event)
    return model.people.get(person_id)


# --- the projection: its tables and its writes --------------------------------------


class StateProjection(TableProjection):
    name = "state"
    version = 1
    topics = TOPICS
    table_names = ("ops_state_people", "ops_state_memberships", "ops_state_communities")

    def check(self) -> None:
        check()

    def ddl(self) -> list[str]:
        people, members, communities = self.tables()
        return [
            f"CREATE TABLE IF NOT EXISTS {people} ("
            "subject TEXT PRIMARY KEY, person_id BIGINT NOT NULL UNIQUE, email TEXT, "
            "signup_code TEXT, updated_at TEXT NOT NULL, position BIGINT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {members} ("
            "person_id BIGINT NOT NULL, community_id BIGINT NOT NULL, "
            "added_at TEXT NOT NULL, position BIGINT NOT NULL, "
            "PRIMARY KEY (person_id, community_id))",
            "CREATE INDEX IF NOT EXISTS "
            f"{self.index('ops_state_memberships_community', 'ops_state_memberships')} "
            f"ON {members} (community_id)",
            f"CREATE TABLE IF NOT EXISTS {communities} ("
            "subject TEXT PRIMARY KEY, community_id BIGINT NOT NULL UNIQUE, name TEXT)",
        ]

    def write(self, cursor: Any, events: list[tuple[int, Any]]) -> None:
        """The batch folded per row: new people, then each touched person's final
        email and code, then new memberships (which find the person's id by subject)."""
        people = _PeopleBatch()
        for position, event in events:
            effect = MEANINGS[type(event)](event)
            if isinstance(effect, Names):
                self._community(cursor, event, effect)
            else:
                people.add(position, event, effect)
        people_table, members = self.t("ops_state_people"), self.t("ops_state_memberships")
        self.views.execute_rows(
            cursor,
            f"INSERT INTO {people_table} "
            "(subject, person_id, email, signup_code, updated_at, position) "
            "SELECT subject, person_id, email, NULL, updated_at, position FROM {rows} "
            "WHERE true ON CONFLICT (subject) DO NOTHING",
            REGISTERED_COLUMNS,
            people.registered,
        )
        self.views.execute_rows(
            cursor,
            f"UPDATE {people_table} AS p SET "
            "email = CASE WHEN r.email_set THEN r.email ELSE p.email END, "
            "signup_code = CASE WHEN r.code_set THEN r.code ELSE p.signup_code END, "
            "updated_at = r.updated_at, position = r.position "
            "FROM {rows} WHERE p.subject = r.subject",
            CHANGED_COLUMNS,
            [tuple(change) for change in people.changed.values()],
        )
        self.views.execute_rows(
            cursor,
            f"INSERT INTO {members} (person_id, community_id, added_at, position) "
            "SELECT p.person_id, r.community_id, r.added_at, r.position "
            f"FROM {{rows}} JOIN {people_table} p ON p.subject = r.subject "
            "WHERE true ON CONFLICT (person_id, community_id) DO NOTHING",
            JOINED_COLUMNS,
            list(people.joined.values()),
        )

    def _community(self, cursor: Any, event: Any, named: Names) -> None:
        """Communities are a handful: one statement each, as they come."""
        table = self.t("ops_state_communities")
        if named.community_id is not None:
            self.execute(
                cursor,
                f"INSERT INTO {table} (subject, community_id, name) "
                "VALUES (%s, %s, %s) ON CONFLICT (subject) DO NOTHING",
                (str(event.originator_id), named.community_id, named.name),
            )
        else:
            self.execute(
                cursor,
                f"UPDATE {table} SET name=%s WHERE subject=%s",
                (named.name, str(event.originator_id)),
            )


REGISTERED_COLUMNS = (
    ("subject", "text"),
    ("person_id", "bigint"),
    ("email", "text"),
    ("updated_at", "text"),
    ("position", "bigint"),
)
CHANGED_COLUMNS = (
    ("subject", "text"),
    ("email_set", "boolean"),
    ("email", "text"),
    ("code_set", "boolean"),
    ("code", "text"),
    ("updated_at", "text"),
    ("position", "bigint"),
)
CHANGED_SLOTS = {"email": 1, "signup_code": 3}  # where each SETTABLE goes in a changed row
JOINED_COLUMNS = (
    ("subject", "text"),
    ("community_id", "bigint"),
    ("added_at", "text"),
    ("position", "bigint"),
)


@dataclass
class _PeopleBatch:
    """One batch of person events, folded to one write per row: a person's
    registration as it came, their last email and code (and when), and each
    membership as first added (the ones after it changed nothing)."""

    registered: list[tuple[Any, ...]] = field(default_factory=list)
    changed: dict[str, list[Any]] = field(default_factory=dict)  # as CHANGED_COLUMNS
    joined: dict[tuple[str, int], tuple[Any, ...]] = field(default_factory=dict)

    def add(self, position: int, event: Any, effect: Effect) -> None:
        subject, at = str(event.originator_id), iso(event.timestamp)
        if isinstance(effect, Registered):
            self.registered.append((subject, effect.person_id, effect.email, at, position))
        elif isinstance(effect, Joins):
            key = (subject, effect.community_id)
            if key not in self.joined:
                self.joined[key] = (subject, effect.community_id, at, position)
        elif isinstance(effect, Sets):
            change = self.changed.setdefault(subject, [subject, False, None, False, None, at, 0])
            slot = CHANGED_SLOTS[effect.attribute]
            change[slot : slot + 2] = True, effect.value
            change[5:7] = at, position


class StateView:
    """Queries over the state projection; each answer is one consistent snapshot."""

    def __init__(self, views: ViewsMixin) -> None:
        self.views = views
        self.t = views.table

    def position(self) -> int:
        return self.views.position(StateProjection.name)

    def snapshot(self) -> StateSnapshot:
        """Everyone, with their communities, and every community's name."""
        return self._read()

    def person(self, person_id: int) -> PersonRecord | None:
        return self._read(person_id=person_id).person(person_id)

    def members(self, community_id: int) -> tuple[PersonRecord, ...]:
        return self._read(community_id=community_id).members(community_id)

    def community_names(self) -> dict[int, str | None]:
        return self._read(people=False).communities

    def _read(
        self,
        *,
        person_id: int | None = None,
        community_id: int | None = None,
        people: bool = True,
    ) -> StateSnapshot:
        people_table, members = self.t("ops_state_people"), self.t("ops_state_memberships")
        where, params = "", ()
        if person_id is not None:
            where, params = " WHERE p.person_id = %s", (person_id,)
        elif community_id is not None:
            where = (
                f" WHERE p.person_id IN (SELECT person_id FROM {members} WHERE community_id = %s)"
            )
            params = (community_id,)
        found: dict[int, PersonRecord] = {}
        joined: dict[int, list[int]] = {}
        with self.views.read() as cursor:
            position = self.views.position(StateProjection.name, cursor)
            if people:
                self.views.execute(
                    cursor,
                    f"SELECT p.person_id, p.email, p.signup_code FROM {people_table} p{where}",
                    params,
                )
                for r in cursor.fetchall():
                    found[r["person_id"]] = PersonRecord(
                        r["person_id"], r["email"], r["signup_code"]
                    )
                self.views.execute(
                    cursor,
                    f"SELECT m.person_id, m.community_id FROM {members} m "
                    f"JOIN {people_table} p ON p.person_id = m.person_id{where}",
                    params,
                )
                for r in cursor.fetchall():
                    joined.setdefault(r["person_id"], []).append(r["community_id"])
            self.views.execute(
                cursor, f"SELECT community_id, name FROM {self.t('ops_state_communities')}"
            )
            communities = {r["community_id"]: r["name"] for r in cursor.fetchall()}
        records = tuple(
            PersonRecord(p.person_id, p.email, p.signup_code, tuple(sorted(joined.get(pid, ()))))
            for pid, p in sorted(found.items())
        )
        return StateSnapshot(position, records, communities)
