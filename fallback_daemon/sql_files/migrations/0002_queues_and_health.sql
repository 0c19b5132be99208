-- 0002 (expand): dead letters for unparseable queue messages; receipt-feed health per channel.

CREATE TABLE dead_letters (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source            text NOT NULL,          -- mns | sqs | http
    queue             text NOT NULL,
    kind              text NOT NULL,          -- chatapp | sms
    queue_message_id  text,
    body              text NOT NULL,          -- exactly as received
    error             text NOT NULL,
    received_at       timestamptz NOT NULL DEFAULT now(),
    replayed_at       timestamptz
);
CREATE INDEX dead_letters_pending ON dead_letters (received_at) WHERE replayed_at IS NULL;

-- Last receipt seen per channel (flushed by every replica every few seconds) and the gate's state.
CREATE TABLE feed_health (
    channel          text PRIMARY KEY,
    last_receipt_at  timestamptz,
    gate_closed      boolean NOT NULL DEFAULT false,
    changed_at       timestamptz NOT NULL DEFAULT now()
);

-- "Was anything sent on this channel since the last receipt?" for the gate.
CREATE INDEX messages_channel_sent ON messages (channel, sent_at) WHERE sent_at IS NOT NULL;

-- Held fallbacks (health gate, interrupted firing) are counted and listed often; keep them in a small index.
CREATE INDEX messages_held ON messages (hold_reason, updated_at) WHERE fallback_state = 'held';
