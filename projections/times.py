"""Instants as the read models store them: fixed-width UTC text, so text order is time order."""

from datetime import UTC, datetime


def iso(moment: datetime) -> str:
    """A fixed-width UTC timestamp, so text comparison is time order on both stores."""
    if moment.tzinfo is UTC and moment.year >= 1000:  # every event's: isoformat is C, no strftime
        return moment.isoformat(timespec="microseconds")[:-6] + "Z"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """ISO 8601 (a date alone means its midnight, UTC unless an offset is given)."""
    value = text.strip().replace("Z", "+00:00").replace("z", "+00:00")
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
