"""The state read model: who is in which community, every person's email and
current signup code, and community names. Its tables, its writes and its queries.

`StateView` answers from the projection; `replayed_state` gives the same shape
replayed from the log in plain Python (`state --as-of`, `verify`)."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from eventsourcing.dispatch import singledispatchmethod

from aggregates import Community, Person
from projections.model import STATE_TOPICS, Derived, iso, replay
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

    @singledispatchmethod
    def apply(self, event: Any, cursor: Any, position: int) -> None:
        pass

    @apply.register
    def _registered(self, event: Person.Registered, cursor: Any, position: int) -> None:
        self.execute(
            cursor,
            f"INSERT INTO {self.t('ops_state_people')} "
            "(subject, person_id, email, signup_code, updated_at, position) "
            "VALUES (%s, %s, %s, NULL, %s, %s) ON CONFLICT (subject) DO NOTHING",
            (
                str(event.originator_id),
                event.person_id,
                event.email,
                iso(event.timestamp),
                position,
            ),
        )

    @apply.register
    def _email_changed(self, event: Person.EmailChanged, cursor: Any, position: int) -> None:
        self.execute(
            cursor,
            f"UPDATE {self.t('ops_state_people')} SET email=%s, updated_at=%s, position=%s "
            "WHERE subject=%s",
            (event.email, iso(event.timestamp), position, str(event.originator_id)),
        )

    @apply.register
    def _code_changed(self, event: Person.SignupCodeChanged, cursor: Any, position: int) -> None:
        self.execute(
            cursor,
            f"UPDATE {self.t('ops_state_people')} SET signup_code=%s, updated_at=%s, position=%s "
            "WHERE subject=%s",
            (event.new_code, iso(event.timestamp), position, str(event.originator_id)),
        )

    @apply.register
    def _member_added(self, event: Person.MemberAdded, cursor: Any, position: int) -> None:
        self.execute(
            cursor,
            f"INSERT INTO {self.t('ops_state_memberships')} "
            "(person_id, community_id, added_at, position) "
            f"SELECT person_id, %s, %s, %s FROM {self.t('ops_state_people')} WHERE subject=%s "
            "ON CONFLICT (person_id, community_id) DO NOTHING",
            (event.community_id, iso(event.timestamp), position, str(event.originator_id)),
        )

    @apply.register
    def _community_created(self, event: Community.Created, cursor: Any, position: int) -> None:
        self.execute(
            cursor,
            f"INSERT INTO {self.t('ops_state_communities')} (subject, community_id, name) "
            "VALUES (%s, %s, %s) ON CONFLICT (subject) DO NOTHING",
            (str(event.originator_id), event.community_id, event.name),
        )

    @apply.register
    def _community_renamed(self, event: Community.Renamed, cursor: Any, position: int) -> None:
        self.execute(
            cursor,
            f"UPDATE {self.t('ops_state_communities')} SET name=%s WHERE subject=%s",
            (event.name, str(event.originator_id)),
        )


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
