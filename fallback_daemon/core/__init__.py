"""The pure core: states, decisions, input rules, receipt parsing, the ports. No I/O, no clock."""
