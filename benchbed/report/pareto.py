"""Accuracy against latency: the Pareto front of a set of entries, and a comparison of two methods at
equal latency rather than at equal ReLUs (the same question a private-inference paper's "× less
latency at iso-accuracy" asks). Latency is a price's network latency on one network under one
profile, the figure boards rank."""
from __future__ import annotations

import math
from dataclasses import dataclass

from benchbed.report.tables import costs, network_seconds

# The network a headline latency is read on: the WAN setting, where rounds weigh most.
HEADLINE_NETWORK = "WAN"


@dataclass(frozen=True)
class Point:
    name: str        # e.g. "snl @ 600"
    latency: float   # seconds
    value: float     # the metric, higher is better


def front(points: list[Point]) -> list[Point]:
    """The points no other point beats on both axes (as fast or faster and strictly more accurate), fastest first."""
    best, kept = -math.inf, []
    for p in sorted(points, key=lambda p: (p.latency, -p.value)):
        if p.value > best:
            kept.append(p)
            best = p.value
    return kept


def network_of(records: list[dict], profile: str) -> str | None:
    """The headline network if the records were priced on it, else the first they were."""
    found = next((list(network_seconds(c)) for r in records for p, c in costs(r).items() if p == profile), [])
    return HEADLINE_NETWORK if HEADLINE_NETWORK in found else (found[0] if found else None)


def entry_latency(record: dict, profile: str, network: str) -> float | None:
    cost = costs(record).get(profile)
    return network_seconds(cost).get(network) if cost else None


def points(records: list[dict], metric: str, profile: str, network: str, name) -> list[Point]:
    """One point per group of records (``name(record)``, e.g. method and budget): means over its seeds."""
    groups: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        value, seconds = (r.get("metrics") or {}).get(metric), entry_latency(r, profile, network)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and seconds is not None:
            groups.setdefault(name(r), []).append((float(seconds), float(value)))
    return [Point(key, sum(s for s, _ in pairs) / len(pairs), sum(v for _, v in pairs) / len(pairs))
            for key, pairs in groups.items()]


@dataclass(frozen=True)
class Tally:
    """One side's points, each against the other side's best at no more latency."""

    ahead: int = 0    # the side's point is better
    level: int = 0
    behind: int = 0
    alone: int = 0    # the other side has no point as fast

    @property
    def total(self) -> int:
        return self.ahead + self.level + self.behind + self.alone


def _tally(mine: list[Point], theirs: list[Point]) -> Tally:
    ahead = level = behind = alone = 0
    for p in mine:
        reach = [q.value for q in theirs if q.latency <= p.latency]
        if not reach:
            alone += 1
        elif p.value > max(reach):
            ahead += 1
        elif p.value == max(reach):
            level += 1
        else:
            behind += 1
    return Tally(ahead, level, behind, alone)


@dataclass(frozen=True)
class AtEqualLatency:
    """A against B at equal latency, read from both sides' points: at each of A's latencies A's point
    against B's best no slower (``at_a``), and at each of B's, B's point against A's best (``at_b``)."""

    at_a: Tally
    at_b: Tally

    def text(self, a: str, b: str) -> str:
        def side(own: str, other: str, tally: Tally) -> str:
            parts = [f"ahead at {tally.ahead}", f"level at {tally.level}", f"behind at {tally.behind}"]
            if tally.alone:
                parts.append(f"no {other} entry as fast at {tally.alone}")
            return f"at {own}'s {tally.total} latenc{'y' if tally.total == 1 else 'ies'}, {own} " + ", ".join(parts)
        return f"{side(a, b, self.at_a)}; {side(b, a, self.at_b)}"


def at_equal_latency(a: list[Point], b: list[Point]) -> AtEqualLatency:
    """Each side's points against the other's best at no more latency."""
    return AtEqualLatency(_tally(a, b), _tally(b, a))
