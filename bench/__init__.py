"""The benchmark harness (`python -m bench`, `make bench`): each scenario measures the daemon's real code path
and, in the same run, a raw-SQL baseline doing the same database work. See docs/performance.md."""
