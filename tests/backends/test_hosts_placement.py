"""Placement of new nodes on hosts: pack, spread, selectors, shortfall messages, port slots."""

from __future__ import annotations

from collections import Counter

import pytest

from raydeck.backends.base import PoolSpec
from raydeck.backends.hosts.placement import (
    Capacity,
    HostView,
    PlacementShortfall,
    choose_port_base,
    place_nodes,
)


def _hosts(*cpus: float, labels: dict[str, dict[str, str]] | None = None) -> list[HostView]:
    return [
        HostView(f"id{i}", f"h{i}", (labels or {}).get(f"h{i}", {}), Capacity(c, memory=0), False)
        for i, c in enumerate(cpus, start=1)
    ]


def _workers(pool: PoolSpec) -> list[tuple[str, PoolSpec]]:
    return [(f"{pool.name}-{i}", pool) for i in range(pool.replicas)]


def test_pack_fills_the_fullest_host_that_fits_first() -> None:
    hosts = _hosts(4, 2, 4)
    placed = place_nodes(hosts, _workers(PoolSpec("w", 3, num_cpus=1)), {})
    assert Counter(placed.values()) == {"id2": 2, "id1": 1}
    assert [h.free.cpus for h in hosts] == [3, 0, 4]


def test_spread_puts_replicas_on_different_hosts_then_evenly() -> None:
    placed = place_nodes(
        _hosts(8, 8, 8), _workers(PoolSpec("w", 5, num_cpus=1, placement="spread")), {}
    )
    assert sorted(Counter(placed.values()).values()) == [1, 2, 2]
    # Replicas already running count: the next one avoids their hosts.
    again = place_nodes(
        _hosts(8, 8, 8),
        [("w-3", PoolSpec("w", 4, placement="spread"))],
        {"w": Counter({"id1": 1, "id2": 1, "id3": 0})},
    )
    assert again == {"w-3": "id3"}


def test_selectors_pin_nodes_to_named_or_labelled_hosts() -> None:
    labels = {"h2": {"zone": "b"}, "h3": {"zone": "b", "accel": "yes"}}
    by_name = place_nodes(_hosts(4, 4, 4), _workers(PoolSpec("w", 2, hosts=("h3",))), {})
    assert set(by_name.values()) == {"id3"}
    by_label = place_nodes(
        _hosts(4, 4, 4, labels=labels),
        _workers(PoolSpec("w", 2, placement="spread", host_labels={"zone": "b"})),
        {},
    )
    assert set(by_label.values()) == {"id2", "id3"}


def test_custom_resources_and_memory_must_fit() -> None:
    hosts = [
        HostView("a", "ha", {}, Capacity(4, memory=2 * 1024**3), True),
        HostView("b", "hb", {}, Capacity(4, memory=8 * 1024**3, resources={"accel": 1}), True),
    ]
    placed = place_nodes(
        hosts, [("w-0", PoolSpec("w", 1, memory=4 * 1024**3, resources={"accel": 1}))], {}
    )
    assert placed == {"w-0": "b"}


def test_shortfall_names_pool_need_and_what_is_free() -> None:
    with pytest.raises(PlacementShortfall) as raised:
        place_nodes(_hosts(2, 2), _workers(PoolSpec("w", 3, num_cpus=2)), {})
    message = raised.value.message
    assert raised.value.retryable is False
    assert "pool 'w' is 1 node(s) short: they fit on no host (each needs 2 CPU" in message
    assert "h1 has 0 CPU free" in message
    assert sorted(raised.value.placed) == ["w-0", "w-1"]  # what fits is still placed
    with pytest.raises(PlacementShortfall, match="no host matches its host selector"):
        place_nodes(_hosts(2), _workers(PoolSpec("w", 1, hosts=("nope",))), {})
    with pytest.raises(PlacementShortfall, match="no host is ready"):
        place_nodes([], [("head", PoolSpec("head", 1))], {})


def test_port_slots_skip_taken_bases() -> None:
    assert choose_port_base((21000, 29999), [], avoid_ephemeral=False) == 21000
    assert choose_port_base((21000, 29999), [21000, 21100], avoid_ephemeral=False) == 21200
