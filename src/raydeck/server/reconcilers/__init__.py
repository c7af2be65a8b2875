"""Background loops that drive persisted desired state into reality; restart-safe."""
