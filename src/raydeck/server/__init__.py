"""The control-plane server: FastAPI routers over services, reconcilers, db."""
