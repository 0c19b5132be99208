"""Typed application keys shared by the web modules."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fallback_daemon import config
from fallback_daemon.engine import service

SETTINGS = web.AppKey("settings", config.Settings)
SERVICE = web.AppKey("service", service.Service)
READY = web.AppKey("ready", dict[str, Any])
