"""Where new Ray nodes go: bin-packing (default) or spread over hosts with room. Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from raydeck.backends.base import BackendError, PoolSpec
from raydeck.backends.local.ports import SLOT_SIZE, ephemeral_port_range

__all__ = [
    "Capacity",
    "HostView",
    "PlacementShortfall",
    "choose_port_base",
    "demand",
    "place_nodes",
]


@dataclass
class Capacity:
    cpus: float = 0
    gpus: float = 0
    memory: int = 0  # bytes; 0 on a host means "not reported": not checked
    resources: dict[str, float] = field(default_factory=dict)

    def fits(self, need: Capacity, *, check_memory: bool) -> bool:
        if need.cpus > self.cpus + 1e-9 or need.gpus > self.gpus + 1e-9:
            return False
        if check_memory and need.memory > self.memory:
            return False
        return all(v <= self.resources.get(k, 0) + 1e-9 for k, v in need.resources.items())

    def take(self, need: Capacity) -> None:
        self.cpus -= need.cpus
        self.gpus -= need.gpus
        self.memory -= need.memory
        for key, value in need.resources.items():
            self.resources[key] = self.resources.get(key, 0) - value

    def describe(self) -> str:
        parts = [f"{_num(self.cpus)} CPU"]
        if self.gpus:
            parts.append(f"{_num(self.gpus)} GPU")
        if self.memory:
            parts.append(f"{self.memory / 1024**3:.1f} GiB")
        parts += [f"{_num(v)} {k}" for k, v in sorted(self.resources.items())]
        return ", ".join(parts)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def demand(pool: PoolSpec) -> Capacity:
    return Capacity(pool.num_cpus, pool.num_gpus, int(pool.memory or 0), dict(pool.resources))


@dataclass
class HostView:
    """A host that may take nodes, with what is still free on it right now."""

    id: str
    name: str
    labels: Mapping[str, str]
    free: Capacity
    check_memory: bool = True


class PlacementShortfall(BackendError):
    """Some nodes fit on no host: never retried as is (the hosts must change first).
    ``placed`` holds where the nodes that did fit would go."""

    def __init__(self, message: str, placed: dict[str, str] | None = None) -> None:
        super().__init__(message, retryable=False)
        self.placed = dict(placed or {})


def _eligible(host: HostView, pool: PoolSpec) -> bool:
    if pool.hosts and host.name not in pool.hosts:
        return False
    return all(host.labels.get(k) == v for k, v in pool.host_labels.items())


def place_nodes(
    hosts: Sequence[HostView],
    wanted: Sequence[tuple[str, PoolSpec]],
    existing: Mapping[str, Counter[str]],
) -> dict[str, str]:
    """Node name -> host id for every node in ``wanted`` (head first, then pools in order).

    ``existing`` counts the replicas each pool already has per host id (for spread).
    ``hosts`` are consumed: their ``free`` shrinks as nodes are placed. Raises
    ``PlacementShortfall`` naming every pool that does not fit and why.
    """
    placed: dict[str, str] = {}
    per_pool: dict[str, Counter[str]] = {k: Counter(v) for k, v in existing.items()}
    short: dict[str, tuple[PoolSpec, int]] = {}
    for node, pool in wanted:
        need = demand(pool)
        candidates = [
            h
            for h in hosts
            if _eligible(h, pool) and h.free.fits(need, check_memory=h.check_memory)
        ]
        if not candidates:
            short[pool.name] = (pool, short.get(pool.name, (pool, 0))[1] + 1)
            continue
        counts = per_pool.setdefault(pool.name, Counter())
        if pool.placement == "spread":
            # Fewest replicas of this pool first, then the roomiest host.
            chosen = min(candidates, key=lambda h: (counts[h.id], -h.free.cpus, h.name))
        else:
            # Best fit: the fullest host that still takes the node.
            chosen = min(candidates, key=lambda h: (h.free.cpus - need.cpus, h.name))
        chosen.free.take(need)
        counts[chosen.id] += 1
        placed[node] = chosen.id
    if short:
        raise PlacementShortfall(_shortfall_message(hosts, short), placed)
    return placed


def _shortfall_message(
    hosts: Sequence[HostView],
    short: Mapping[str, tuple[PoolSpec, int]],
) -> str:
    parts = []
    for name, (pool, missing) in short.items():
        label = "the head" if name == "head" else f"pool {name!r}"
        eligible = [h for h in hosts if _eligible(h, pool)]
        where = (
            "; ".join(f"{h.name} has {h.free.describe()} free" for h in eligible[:8])
            if eligible
            else "no host matches its host selector"
            if pool.hosts or pool.host_labels
            else "no host is ready"
        )
        parts.append(
            f"{label} is {missing} node(s) short: they fit on no host "
            f"(each needs {demand(pool).describe()}; {where})"
        )
    return "not enough room on the hosts: " + " | ".join(parts)


def choose_port_base(
    port_range: tuple[int, int], taken: Iterable[int], *, avoid_ephemeral: bool = True
) -> int:
    """The first slot base in ``port_range`` not in ``taken`` (slots clear of the kernel's
    ephemeral range first, as the local backend does)."""
    low, high = port_range
    bases = range(low, high - SLOT_SIZE + 2, SLOT_SIZE)
    used = set(taken)
    eph_low, eph_high = ephemeral_port_range()
    ordered = (
        sorted(bases, key=lambda b: b + SLOT_SIZE > eph_low and b <= eph_high)
        if avoid_ephemeral
        else list(bases)
    )
    for base in ordered:
        if base not in used:
            return base
    raise BackendError(f"no free block of {SLOT_SIZE} ports left in {low}-{high}")
