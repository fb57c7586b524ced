from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from aggregates.ids import derived_id, derived_id_bytes


class Person(Aggregate):
    """A Play Money person. Memberships live here, never on the community,
    so a campaign adding thousands of people to one community never contends."""

    @staticmethod
    def create_id(person_id: int, **_: Any) -> UUID:
        return derived_id("person", person_id)

    @staticmethod
    def id_bytes(person_id: int) -> bytes:
        """create_id's 16 bytes (for bulk paths, which need no UUID object)."""
        return derived_id_bytes("person", person_id)

    @event("Registered")
    def __init__(self, person_id: int, email: str | None, meta: dict[str, Any]) -> None:
        self.person_id = person_id
        self.email = email
        self.communities: set[int] = set()
        self.signup_code: str | None = None

    def join(self, community_id: int, meta: dict[str, Any]) -> bool:
        """Add to the community; False (and no event) if already a member."""
        if community_id in self.communities:
            return False
        self._member_added(community_id=community_id, meta=meta)
        return True

    def set_signup_code(self, code: str | None, meta: dict[str, Any]) -> bool:
        """Set (or clear, with None) the code; False (and no event) if unchanged."""
        if code == self.signup_code:
            return False
        self._signup_code_changed(previous_code=self.signup_code, new_code=code, meta=meta)
        return True

    def set_email(self, email: str | None, meta: dict[str, Any]) -> bool:
        if email == self.email:
            return False
        self._email_changed(previous_email=self.email, email=email, meta=meta)
        return True

    @event("MemberAdded")
    def _member_added(self, community_id: int, meta: dict[str, Any]) -> None:
        self.communities.add(community_id)

    @event("SignupCodeChanged")
    def _signup_code_changed(
        self, previous_code: str | None, new_code: str | None, meta: dict[str, Any]
    ) -> None:
        self.signup_code = new_code

    @event("EmailChanged")
    def _email_changed(
        self, previous_email: str | None, email: str | None, meta: dict[str, Any]
    ) -> None:
        self.email = email
