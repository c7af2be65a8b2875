"""The price catalog: YAML on disk (``RAYDECK_PRICE_CATALOG``) or the built-in default.

```yaml
currency: USD
default: {cpu_hour: 0.0475, gpu_hour: 2.48, memory_gib_hour: 0.0064}
machine_types:
  n2-standard-4: {hour: 0.194}
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from raydeck.core.errors import InvalidArgumentError
from raydeck.core.models.operations import PriceCatalog, UnitPrices

__all__ = ["DEFAULT_CATALOG", "load_catalog", "node_hour_prices"]

DEFAULT_CATALOG = PriceCatalog(
    currency="USD", default=UnitPrices(cpu_hour=0.0475, gpu_hour=2.48, memory_gib_hour=0.0064)
)


def load_catalog(path: Path | None) -> PriceCatalog:
    """Fails loudly (at server start) on a missing or malformed catalog."""
    if path is None:
        return DEFAULT_CATALOG
    try:
        data = yaml.safe_load(path.read_text())
        return PriceCatalog.model_validate(data or {})
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise InvalidArgumentError(
            f"price catalog {path}: {exc}".splitlines()[0], field="price_catalog"
        ) from exc


def node_hour_prices(catalog: PriceCatalog, cluster_spec: dict[str, Any]) -> dict[str, float]:
    """Hourly price of one node of each pool ("head" included) of a stored cluster spec."""
    pools = [{**cluster_spec["head"], "name": "head"}, *cluster_spec.get("worker_pools", [])]
    return {
        str(pool["name"]): catalog.node_hour_price(
            machine_type=pool.get("machine_type"),
            cpus=float(pool.get("num_cpus") or 0),
            gpus=float(pool.get("num_gpus") or 0),
            memory_bytes=pool.get("memory"),
        )
        for pool in pools
    }
