"""The sandbox's run-time state, one object per application, reached by handlers through `STATE`."""

from __future__ import annotations

from aiohttp import web

from fallback_daemon.sandbox import auth, journal, pusher, receipts, replies, world
from fallback_daemon.sandbox import config as config_mod


class SandboxState:
    """Everything one sandbox app owns: verifier, limiter, world, journal, pushers and producer."""

    def __init__(self, config: config_mod.SandboxConfig) -> None:
        self.config = config
        self.callbacks = config_mod.Callbacks.from_config(config)
        self.verifier = auth.Verifier(
            keys={config.access_key_id: config.access_key_secret}, max_skew_s=config.max_skew_s
        )
        self.limiter = auth.RateLimiter(qps=config.qps, clock=config.clock)
        self.world = world.World(config)
        self.journal = journal.Journal(limit=config.journal_limit)
        self.ids = replies.Ids()
        self.chat_pusher = pusher.Pusher(
            name="chatapp", url=lambda: self.callbacks.chatapp, config=config, journal=self.journal
        )
        self.sms_pusher = pusher.Pusher(
            name="sms", url=lambda: self.callbacks.sms, config=config, journal=self.journal
        )
        self.sms_domestic_pusher = pusher.Pusher(
            name="sms_domestic", url=self.callbacks.domestic_url, config=config, journal=self.journal
        )
        self.producer = receipts.Producer(
            config=config,
            world=self.world,
            journal=self.journal,
            chat=self.chat_pusher,
            sms=self.sms_pusher,
            sms_domestic=self.sms_domestic_pusher,
        )

    @property
    def pushers(self) -> tuple[pusher.Pusher, ...]:
        return (self.chat_pusher, self.sms_pusher, self.sms_domestic_pusher)

    def set_callbacks(
        self, chatapp_url: str | None, sms_url: str | None, sms_domestic_url: str | None = None
    ) -> None:
        self.callbacks.chatapp = chatapp_url
        self.callbacks.sms = sms_url
        self.callbacks.sms_domestic = sms_domestic_url


STATE = web.AppKey("sandbox_state", SandboxState)
