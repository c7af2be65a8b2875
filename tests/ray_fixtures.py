"""Real-Ray fixtures (filled in below)."""
