"""HTTP routers: thin (auth dependency, parse, one service call)."""
