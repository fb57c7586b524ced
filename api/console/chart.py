"""Calls per hour as a stacked bar chart, laid out here and drawn as inline SVG by
the template: no script, no library, nothing fetched. The same numbers are in a
table beside it, for screen readers and for copying."""

from collections import defaultdict
from dataclasses import dataclass

from projections.activity import OUTCOMES, HourlyCount

OUTCOME_COLOURS = {"changed": "#1d4ed8", "no-op": "#4b5563", "refused": "#b91c1c"}
# Distinguishable, and at least 3:1 against white (WCAG non-text contrast).
PALETTE = ("#1d4ed8", "#b45309", "#047857", "#7c3aed", "#be185d", "#0e7490")
OTHER_COLOUR = "#4b5563"
MAX_SERIES = len(PALETTE)
NONE_LABEL = "(none given)"

BAR = 6  # horizontal pixels per hour
LEFT, TOP, HEIGHT, BOTTOM = 48, 12, 200, 40


@dataclass(frozen=True)
class Segment:
    x: int
    y: float
    width: int
    height: float
    colour: str
    label: str


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class DayMark:
    x: int
    label: str


@dataclass(frozen=True)
class Series:
    name: str
    colour: str
    changed: int
    no_op: int
    refused: int

    @property
    def total(self) -> int:
        return self.changed + self.no_op + self.refused


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    plot_left: int
    plot_top: int
    plot_height: int
    plot_width: int
    segments: list[Segment]
    ticks: list[Tick]
    days: list[DayMark]
    series: list[Series]
    total: int
    peak: int


def _nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 × 10ⁿ at least `value` (at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def _series(counts: list[HourlyCount], dimension: str) -> tuple[list[Series], dict[str, str]]:
    """The series to draw (largest first, the rest as "other") and each group's series."""
    totals: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0))
    for count in counts:
        name = count.outcome if dimension == "outcome" else (count.group or NONE_LABEL)
        totals[name][count.outcome] += count.calls
    if dimension == "outcome":
        names = list(OUTCOMES)
        colours = dict(OUTCOME_COLOURS)
    else:
        names = sorted(totals, key=lambda n: (-sum(totals[n].values()), n))
        colours = dict(zip(names[:MAX_SERIES], PALETTE, strict=False))
    member = {name: (name if name in colours else "other") for name in totals}
    shown: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0))
    for name, by_outcome in totals.items():
        for outcome, calls in by_outcome.items():
            shown[member[name]][outcome] += calls
    order = [n for n in names if n in colours] + (["other"] if "other" in shown else [])
    series = [
        Series(
            name,
            colours.get(name, OTHER_COLOUR),
            shown[name]["changed"],
            shown[name]["no-op"],
            shown[name]["refused"],
        )
        for name in order
    ]
    return series, member


def build_chart(hours: list[str], counts: list[HourlyCount], dimension: str) -> Chart:
    series, member = _series(counts, dimension)
    colour = {s.name: s.colour for s in series}
    stacks: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for count in counts:
        name = count.outcome if dimension == "outcome" else (count.group or NONE_LABEL)
        stacks[count.hour][member[name]] += count.calls
    peak = max((sum(stack.values()) for stack in stacks.values()), default=0)
    top = _nice_ceiling(peak)
    scale = HEIGHT / top
    segments: list[Segment] = []
    days: list[DayMark] = []
    for index, hour in enumerate(hours):
        x = LEFT + index * BAR
        if hour.endswith("T00:00Z") or (index == 0 and int(hour[11:13]) <= 12):
            days.append(DayMark(x, hour[5:10]))
        base = float(TOP + HEIGHT)
        for s in series:
            calls = stacks.get(hour, {}).get(s.name, 0)
            if not calls:
                continue
            height = calls * scale
            base -= height
            label = f"{hour[:10]} {hour[11:16]} UTC — {s.name}: {calls} call(s)"
            segments.append(Segment(x, base, BAR - 1, height, colour[s.name], label))
    ticks = [Tick(TOP + HEIGHT - HEIGHT * f, f"{top * f:g}") for f in (0, 0.5, 1)]
    return Chart(
        width=LEFT + len(hours) * BAR + 8,
        height=TOP + HEIGHT + BOTTOM,
        plot_left=LEFT,
        plot_top=TOP,
        plot_height=HEIGHT,
        plot_width=len(hours) * BAR,
        segments=segments,
        ticks=ticks,
        days=days,
        series=series,
        total=sum(s.total for s in series),
        peak=peak,
    )
