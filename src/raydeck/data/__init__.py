"""Warehouse tables as Ray Data datasets, for code on a cluster or a laptop.

    import raydeck.data as rdata
    ds = rdata.read_table("wh.sales.orders")                  # parallel read
    ds = ds.map_batches(add_margin, batch_format="pyarrow")
    rdata.write_table(ds, "wh.sales.orders_margin", mode="overwrite")   # all or nothing
    rdata.sql_transform("wh", "SELECT region, sum(total) AS total FROM sales.orders GROUP BY 1",
                        into="wh.sales.by_region")           # pushed down to the warehouse

Connections are looked up by name in the control plane (``RAYDECK_SERVER``/``RAYDECK_TOKEN``,
as ``RaydeckClient`` does) once, in the driver; the resolved, picklable connection then
travels into Ray Data's read and write tasks, which never call the control plane.
"""

from __future__ import annotations

from raydeck.data.api import (
    connect,
    read_query,
    read_table,
    sql_transform,
    transform_batches,
    write_table,
)
from raydeck.data.base import Warehouse
from raydeck.data.registry import open_warehouse

__all__ = [
    "Warehouse",
    "connect",
    "open_warehouse",
    "read_query",
    "read_table",
    "sql_transform",
    "transform_batches",
    "write_table",
]
