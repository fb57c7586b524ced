"""The state read model: who is in which community, every person's email and
current signup code, and community names. Its tables, its writes and its queries.

`StateView` answers from the projection; `replayed_state` gives the same shape
replayed from the log in plain Python (`state --as-of`, `verify`)."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aggregates import Community, Person
from projections.model import COMMUNITY_EVENTS, STATE_TOPICS, Derived, iso, replay
from projections.projection import TableProjection
from projections.store import ViewsMixin


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

    @classmethod
    def from_derived(cls, derived: Derived) -> "StateSnapshot":
        people = tuple(
            PersonRecord(p.person_id, p.email, p.signup_code, tuple(sorted(p.communities)))
            for p in sorted(derived.people.values(), key=lambda p: p.person_id)
        )
        return cls(derived.position, people, dict(derived.communities))


def replayed_state(
    app: Any, *, until: datetime | None = None, stop: int | None = None
) -> StateSnapshot:
    """The state the log gives at an instant (`until`) or a position (`stop`)."""
    return StateSnapshot.from_derived(replay(app, until=until, stop=stop))


class StateProjection(TableProjection):
    name = "state"
    version = 1
    topics = STATE_TOPICS

    def tables(self) -> list[str]:
        return [
            self.t("ops_state_people"),
            self.t("ops_state_memberships"),
            self.t("ops_state_communities"),
        ]

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
            f"CREATE INDEX IF NOT EXISTS ops_state_memberships_community "
            f"ON {members} (community_id)",
            f"CREATE TABLE IF NOT EXISTS {communities} ("
            "subject TEXT PRIMARY KEY, community_id BIGINT NOT NULL UNIQUE, name TEXT)",
        ]

    def write(self, cursor: Any, events: list[tuple[int, Any]]) -> None:
        """The batch folded per row: new people, then each touched person's final
        email and code, then new memberships (which find the person's id by subject)."""
        people = _PeopleBatch()
        for position, event in events:
            if isinstance(event, COMMUNITY_EVENTS):
                self._community(cursor, event)
            else:
                people.add(position, event)
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

    def _community(self, cursor: Any, event: Any) -> None:
        """Communities are a handful: one statement each, as they come."""
        table = self.t("ops_state_communities")
        if isinstance(event, Community.Created):
            self.execute(
                cursor,
                f"INSERT INTO {table} (subject, community_id, name) "
                "VALUES (%s, %s, %s) ON CONFLICT (subject) DO NOTHING",
                (str(event.originator_id), event.community_id, event.name),
            )
        else:
            self.execute(
                cursor,
                f"UPDATE {table} SET name=%s WHERE subject=%s",
                (event.name, str(event.originator_id)),
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

    def add(self, position: int, event: Any) -> None:
        subject, at = str(event.originator_id), iso(event.timestamp)
        if isinstance(event, Person.Registered):
            self.registered.append((subject, event.person_id, event.email, at, position))
        elif isinstance(event, Person.MemberAdded):
            key = (subject, event.community_id)
            if key not in self.joined:
                self.joined[key] = (subject, event.community_id, at, position)
        elif isinstance(event, Person.EmailChanged | Person.SignupCodeChanged):
            change = self.changed.setdefault(subject, [subject, False, None, False, None, at, 0])
            if isinstance(event, Person.EmailChanged):
                change[1:3] = True, event.email
            else:
                change[3:5] = True, event.new_code
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
