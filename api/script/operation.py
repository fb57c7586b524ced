"""What `pm-ops call` calls: one of the declared operations (commands/operations.py),
with the value its attribute takes for every row (`--community 42`, `--code X`,
`--clear`) or, left open, from each row's column; and for whom (a person id or an email)."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.client import OpsClient, Result
from commands.operations import OPERATIONS, Field
from commands.operations import Operation as Declared


@dataclass(frozen=True)
class Target:
    person_id: int | None
    email: str | None


@dataclass(frozen=True)
class Operation:
    declared: Declared
    value: Any = None  # the attribute's value for every row, if the options gave one
    clear: bool = False  # a nullable attribute set to null for every row

    @property
    def name(self) -> str:
        return self.declared.name

    @property
    def field(self) -> Field:
        return self.declared.field

    @property
    def fixed_value_given(self) -> bool:
        return self.value is not None or self.clear

    def row_value(self, row: dict[str, str] | None) -> Any:
        """The attribute's value for this call: the options', else the row's column."""
        if self.fixed_value_given or row is None:
            return None if self.clear else self.value
        text = row[self.field.name]
        return int(text) if self.field.is_integer else text

    def invoke(
        self, client: OpsClient, target: Target, key: str | None, row: dict[str, str] | None = None
    ) -> Result:
        """One call; `row` (canonical column -> value) gives what the options leave open."""
        return client.call(
            self.name,
            key=key,
            person_id=target.person_id,
            email=target.email,
            value=self.row_value(row),
        )

    def command_line(self, from_file: Path) -> str:
        """The command that runs this operation over another file (the failed rows)."""
        words = ["pm-ops", "call", self.name, "--from", str(from_file)]
        if self.value is not None:
            words += [f"--{self.field.option}", str(self.value)]
        if self.clear:
            words.append("--clear")
        return shlex.join(words)

    def fingerprint(self) -> str:
        """What, besides the file, decides the bodies: part of every --from key. One slot
        per declared attribute, in declaration order: [name, communityId, code, clear]
        for the first two operations, as 0.1 derived it, so a run resumes across versions."""
        slots = [self.value if op is self.declared else None for op in OPERATIONS]
        return json.dumps([self.name, *slots, self.clear])
