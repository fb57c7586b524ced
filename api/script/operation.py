"""What `pm-ops call` calls: one of the two operations with the options that fix its value
for every row (`--community`, `--code`, `--clear`), and for whom (a person id or an email)."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from api.client import MembershipResult, OpsClient, SignupCodeResult

Result = MembershipResult | SignupCodeResult


@dataclass(frozen=True)
class Target:
    person_id: int | None
    email: str | None


@dataclass(frozen=True)
class Operation:
    name: str
    community_id: int | None = None
    code: str | None = None
    clear: bool = False

    @classmethod
    def add_member(cls, community_id: int | None) -> Operation:
        return cls("add-member", community_id=community_id)

    @classmethod
    def set_code(cls, code: str | None, clear: bool) -> Operation:
        return cls("set-code", code=code, clear=clear)

    @property
    def fixed_value_given(self) -> bool:
        return self.community_id is not None if self.name == "add-member" else self.is_code_given

    @property
    def is_code_given(self) -> bool:
        return self.code is not None or self.clear

    def invoke(
        self, client: OpsClient, target: Target, key: str | None, row: dict[str, str] | None = None
    ) -> Result:
        """One call; `row` (canonical column -> value) gives what the options leave open."""
        person = {"person_id": target.person_id, "email": target.email}
        if self.name == "add-member":
            community = self.community_id
            if community is None:
                assert row is not None
                community = int(row["communityId"])
            return client.add_member(community_id=community, key=key, **person)
        code = None if self.clear else self.code
        if row is not None and not self.is_code_given:
            code = row["code"]
        return client.set_code(code=code, key=key, **person)

    def command_line(self, from_file: Path) -> str:
        """The command that runs this operation over another file (the failed rows)."""
        words = ["pm-ops", "call", self.name, "--from", str(from_file)]
        if self.community_id is not None:
            words += ["--community", str(self.community_id)]
        if self.code is not None:
            words += ["--code", self.code]
        if self.clear:
            words.append("--clear")
        return shlex.join(words)

    def fingerprint(self) -> str:
        """What, besides the file, decides the bodies: part of every --from key."""
        return json.dumps([self.name, self.community_id, self.code, self.clear])
