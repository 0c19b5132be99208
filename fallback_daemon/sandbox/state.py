"""The sandbox's run-time state, one object per application, reached by handlers through `STATE`."""

from __future__ import annotations

from aiohttp import web

from fallback_daemon.sandbox import (
    auth,
    journal,
    ledger,
    mnsauth,
    mnsqueue,
    pusher,
    rates,
    receipts,
    replies,
    sts,
    world,
)
from fallback_daemon.sandbox import config as config_mod


class SandboxState:
    """Everything one sandbox app owns: verifier, limiter, world, journal, pushers and producer."""

    def __init__(self, config: config_mod.SandboxConfig) -> None:
        self.config = config
        self.callbacks = config_mod.Callbacks.from_config(config)
        # STS credentials issued by AssumeRoleWithOIDC; both signature styles accept them while valid.
        self.sts = sts.StsCredentials(clock=config.wall_clock, max_duration_s=config.sts_max_duration_s)
        keys = {config.access_key_id: config.access_key_secret}
        self.verifier = auth.Verifier(
            keys=keys, max_skew_s=config.max_skew_s, now=config.wall_clock, sts=self.sts
        )
        self.rpc_verifier = auth.RpcVerifier(
            keys=keys, max_skew_s=config.max_skew_s, now=config.wall_clock, sts=self.sts
        )
        # Every admit/throttle decision is also counted per second (GET /sandbox/rates).
        qps = auth.RateLimiter(qps=config.qps, clock=config.clock)
        self.limiter = rates.CountingLimiter(qps, config.clock)
        self.world = world.World(config)
        self.journal = journal.Journal(limit=config.journal_limit, path=config.journal_path)
        self.ids = replies.Ids()
        # Accepted sends with their times (the query APIs answer from it) and the lost-answer knobs.
        self.ledger = ledger.Ledger(
            limit=config.journal_limit, path=f"{config.journal_path}.ledger" if config.journal_path else None
        )
        # MNS: queues, temporary credentials, receipt delivery mode and the delete-stall knob.
        self.delivery = config.receipt_delivery
        self.mns = mnsqueue.Broker(
            [config.chatapp_queue, config.sms_queue, *config.mns_extra_queues],
            visibility_timeout_s=config.mns_visibility_timeout_s,
            stats=lambda: self.journal.stats,
        )
        self.tokens = mnsauth.Tokens(ttl_s=config.mns_token_ttl_s)
        self.mns_verifier = mnsauth.Verifier(
            access_key_id=config.access_key_id,
            access_key_secret=config.access_key_secret,
            tokens=self.tokens,
            max_skew_s=config.max_skew_s,
        )
        self.stall_deletes = 0  # the next N delete requests are held unanswered (test knob)
        self.chat_pusher = pusher.Pusher(
            name="chatapp",
            url=lambda: self.callbacks.chatapp,
            config=config,
            journal=self.journal,
            mns=self.mns.feed(config.chatapp_queue),
            delivery=lambda: self.delivery,
        )
        self.sms_pusher = pusher.Pusher(
            name="sms",
            url=lambda: self.callbacks.sms,
            config=config,
            journal=self.journal,
            mns=self.mns.feed(config.sms_queue),
            delivery=lambda: self.delivery,
        )
        self.sms_domestic_pusher = pusher.Pusher(
            name="sms_domestic",
            url=self.callbacks.domestic_url,
            config=config,
            journal=self.journal,
            mns=self.mns.feed(config.sms_queue),
            delivery=lambda: self.delivery,
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

    async def hold_answer(self, request: web.Request) -> None:
        """Keep a processed request unanswered until its client gives up or the sandbox shuts down: the
        "request arrived, answer lost" fault (an ambiguous send for the client)."""
        while not self.mns.closed:
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            # aiohttp has no awaitable for "client went away" without handler cancellation: poll (50 ms).
            await self.mns.wait_closed(0.05)


STATE = web.AppKey("sandbox_state", SandboxState)
