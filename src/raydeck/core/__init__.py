"""Shared models, errors and settings: imported by server, SDK, CLI and backends."""
