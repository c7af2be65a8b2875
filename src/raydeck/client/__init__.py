"""Typed Python SDK for the Raydeck API."""

from raydeck.client.config import ClientConfig, load_client_config
from raydeck.client.sdk import RaydeckClient

__all__ = ["ClientConfig", "RaydeckClient", "load_client_config"]
