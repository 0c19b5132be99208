"""`python -m fallback_daemon` is the `fallback-daemon` command."""

from __future__ import annotations

import sys

from fallback_daemon import cli

sys.exit(cli.main())
