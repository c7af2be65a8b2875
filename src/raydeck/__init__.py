"""Raydeck: a self-hosted control plane for Ray.

``ray.init("raydeck://<cluster>")`` imports this package and needs ``ClientBuilder`` in
``dir(raydeck)``; it is resolved lazily so ``import raydeck`` never imports Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raydeck.client.ray_builder import RaydeckClientBuilder as ClientBuilder
    from raydeck.runtime.training.reporting import report

__version__ = "0.1.0"

__all__ = ["ClientBuilder", "__version__", "report"]


def __getattr__(name: str) -> Any:
    if name == "ClientBuilder":
        from raydeck.client.ray_builder import RaydeckClientBuilder

        return RaydeckClientBuilder
    if name == "report":  # raydeck.report(metric=value, step=n) in training code
        from raydeck.runtime.training.reporting import report

        return report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "ClientBuilder", "report"})
