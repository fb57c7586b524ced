"""What a check found: findings (each a difference, with where it is) and notes (what was
checked). `verify`, the chain, the checkpoints and the console's verify all report in it."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Finding:
    area: str
    position: int | None
    message: str

    def __str__(self) -> str:
        where = f"position {self.position}: " if self.position is not None else ""
        return f"[{self.area}] {where}{self.message}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, area: str, position: int | None, message: str) -> None:
        self.findings.append(Finding(area, position, message))

    def then(self, later: "Report") -> "Report":
        """This report followed by `later`'s findings and notes."""
        return Report(self.findings + later.findings, self.notes + later.notes)
