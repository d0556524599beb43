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
class AtEqualLatency:
    ahead: int      # B's points where A's best at no more latency is better
    level: int      # ... equal
    behind: int     # ... worse
    slower: int     # B's points faster than every A point

    def text(self, a: str, b: str) -> str:
        total = self.ahead + self.level + self.behind + self.slower
        parts = [f"{a} ahead at {self.ahead}", f"level at {self.level}", f"behind at {self.behind}"]
        if self.slower:
            parts.append(f"no {a} entry as fast at {self.slower}")
        return ", ".join(parts) + f" of {total} {b} entr{'y' if total == 1 else 'ies'}"


def at_equal_latency(a: list[Point], b: list[Point]) -> AtEqualLatency:
    """For each of B's points, A's best value among its points that are no slower, against B's."""
    ahead = level = behind = slower = 0
    for q in b:
        reach = [p.value for p in a if p.latency <= q.latency]
        if not reach:
            slower += 1
        elif max(reach) > q.value:
            ahead += 1
        elif max(reach) == q.value:
            level += 1
        else:
            behind += 1
    return AtEqualLatency(ahead, level, behind, slower)
