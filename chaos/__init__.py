"""Fault campaign for the daemon: real processes, its own Postgres, faults, invariants checked in SQL."""
