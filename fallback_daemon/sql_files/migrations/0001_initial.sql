-- 0001 (expand): messages with their chat and fallback legs, the event timeline, raw receipts, rate limits.

CREATE TABLE messages (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),  -- our id; sent as TaskId, SMS TaskId/OutId
    idempotency_key     text UNIQUE,
    channel             text NOT NULL,
    to_number           text NOT NULL,
    from_number         text NOT NULL,
    client_task_id      text,
    params              jsonb NOT NULL,        -- SendChatappMessage wire params (no FallBack*, no TaskId)
    fallback_rule       text NOT NULL,
    fallback_duration_s integer,
    sms_text            text,                  -- resolved fallback SMS text; NULL = no fallback
    chat_state          text NOT NULL DEFAULT 'accepted',
    fallback_state      text NOT NULL,
    provider_message_id text,
    send_attempts       integer NOT NULL DEFAULT 0,
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    send_lease_until    timestamptz,
    last_error          text,
    due_at              timestamptz,            -- when the armed fallback fires (NULL: no timer)
    fire_reason         text,
    fire_lease_until    timestamptz,
    hold_reason         text,
    sms_attempts        integer NOT NULL DEFAULT 0,
    sms_provider_id     text,
    double_delivered    boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz,
    fired_at            timestamptz,
    CONSTRAINT chat_state_valid CHECK (chat_state IN
        ('accepted','sending','unknown','sent','send_failed','failed','delivered','read')),
    CONSTRAINT fallback_state_valid CHECK (fallback_state IN
        ('none','armed','held','firing','sms_sent','sms_delivered','sms_failed','cancelled','suppressed'))
);

-- Hot partial indexes: a row leaves each as soon as it leaves the state (finished rows stay out of them).
CREATE INDEX messages_send_queue ON messages (next_attempt_at) WHERE chat_state = 'accepted';
CREATE INDEX messages_sending ON messages (send_lease_until) WHERE chat_state = 'sending';
CREATE INDEX messages_due ON messages (due_at) WHERE fallback_state = 'armed' AND due_at IS NOT NULL;
CREATE INDEX messages_firing ON messages (fire_lease_until) WHERE fallback_state = 'firing';
-- Lookups by the provider's id (receipts) and by recipient (operators).
CREATE INDEX messages_provider_id ON messages (provider_message_id) WHERE provider_message_id IS NOT NULL;
CREATE INDEX messages_to ON messages (to_number, created_at);
CREATE INDEX messages_created ON messages (created_at);

CREATE TABLE message_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id  uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind        text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX message_events_message ON message_events (message_id, id);

-- Every receipt, raw, stored before it is applied. (kind, provider_id, status) is the dedupe key, whatever
-- the source (HTTP, MNS, SQS): the same report over two paths is stored and applied once.
CREATE TABLE receipts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         text NOT NULL,           -- chatapp | sms
    source       text NOT NULL,           -- http | mns | sqs
    provider_id  text NOT NULL,           -- CAMS MessageId, or the SMS provider's id
    status       text NOT NULL,
    task_id      text,
    message_id   uuid,                    -- matched message; NULL while parked
    raw          jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    applied_at   timestamptz,
    CONSTRAINT receipts_dedupe UNIQUE (kind, provider_id, status)
);
CREATE INDEX receipts_parked ON receipts (provider_id) WHERE applied_at IS NULL;
CREATE INDEX receipts_message ON receipts (message_id) WHERE message_id IS NOT NULL;

-- Token buckets shared by every replica (the CAMS per-account cap).
CREATE TABLE rate_limits (
    name        text PRIMARY KEY,
    tokens      double precision NOT NULL,
    updated_at  timestamptz NOT NULL
);
