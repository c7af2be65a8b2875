"""Business logic, one module per resource. Routers call exactly one function here."""
