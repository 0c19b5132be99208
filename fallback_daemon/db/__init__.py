"""Postgres: the pool and its error mapping, queries by name, migrations, the embedded server."""
