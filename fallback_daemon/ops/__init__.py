"""Operator pieces: queries and actions over fallback state, their input rules and the CLI."""
