"""The engine: use cases (accept, ingest, outcomes, attempts, views) and the loops that drive them."""
