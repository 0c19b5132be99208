-- 0004 (expand): every outbound call is a durable attempt, and "claimed" is told apart from "in flight".
--
-- send_started_at / sms_started_at: written (and committed) just before the request is written to the provider.
-- A lease that expires with the mark still NULL proves the request never left: the message is simply sent again.
-- Only a marked attempt can have reached the provider; those go through reconciliation (reconcile_at) before the
-- daemon calls them `unknown` or parks them.
ALTER TABLE messages
    ADD COLUMN send_started_at   timestamptz,
    ADD COLUMN sms_started_at    timestamptz,
    ADD COLUMN sms_last_error    text,
    ADD COLUMN reconcile_at      timestamptz,          -- next provider lookup for an ambiguous send or SMS
    ADD COLUMN reconcile_attempts integer NOT NULL DEFAULT 0;

-- Firing rows by lease end: an expired lease is either a scheduled SMS retry (not started) or a crash to recover.
-- (messages_firing from 0001 already covers fire_lease_until WHERE fallback_state = 'firing'.)
-- Ambiguous chat sends waiting for their next lookup.
CREATE INDEX messages_reconcile ON messages (reconcile_at) WHERE chat_state = 'unknown' AND reconcile_at IS NOT NULL;
