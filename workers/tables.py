"""Text for people: aligned tables, ages and clock times (``serverless-model status``, ``jobs``, ``events``)."""

from collections.abc import Sequence
from datetime import UTC, datetime


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """``rows`` under ``headers`` in left-aligned columns two spaces apart (an empty cell is ``-``)."""
    cells = [list(headers)] + [["-" if cell in (None, "") else str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def age(seconds: float | None) -> str:
    """A duration as a person reads it: ``12ms``, ``2.5s``, ``42s``, ``3m05s``, ``2h10m``, ``4d03h``."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{max(seconds, 0) * 1000:.0f}ms"
    if seconds < 10:
        return f"{seconds:.1f}".rstrip("0").rstrip(".") + "s"
    whole = int(seconds)
    for unit, size, small, small_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if whole >= size:
            return f"{whole // size}{unit}{(whole % size) // small_size:02d}{small}"
    return f"{whole}s"


def moment(stamp: str | None) -> datetime | None:
    """An ISO 8601 time from the gateway, or None."""
    if not stamp:
        return None
    parsed = datetime.fromisoformat(stamp)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def ago(stamp: str | None, now: datetime) -> str:
    """How long before ``now`` a time was: ``3m05s ago``."""
    when = moment(stamp)
    return "" if when is None else f"{age((now - when).total_seconds())} ago"


def clock(stamp: str | None, now: datetime) -> str:
    """A time on this machine's clock: ``14:03:09``, with the date if it is not ``now``'s day."""
    when = moment(stamp)
    if when is None:
        return ""
    local = when.astimezone(now.tzinfo)
    return local.strftime("%H:%M:%S" if local.date() == now.date() else "%Y-%m-%d %H:%M:%S")
