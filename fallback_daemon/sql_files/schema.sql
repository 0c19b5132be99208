-- The schema that applying every migration (sql_files/migrations/*.sql, in order) to an empty database
-- produces, read from the Postgres catalog. Generated: do not edit. Regenerate after changing a migration:
--     .venv/bin/python -m tests.schema_snapshot --write
-- tests/integration/test_schema.py fails when this file and the migrations disagree.

CREATE TABLE dead_letters (
    id bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    source text NOT NULL,
    queue text NOT NULL,
    kind text NOT NULL,
    queue_message_id text,
    body text NOT NULL,
    error text NOT NULL,
    received_at timestamp with time zone DEFAULT now() NOT NULL,
    replayed_at timestamp with time zone,
    replayed_by text,
    replay_reason text,
    CONSTRAINT dead_letters_pkey PRIMARY KEY (id)
);
CREATE INDEX dead_letters_pending ON public.dead_letters USING btree (received_at) WHERE (replayed_at IS NULL);

CREATE TABLE feed_health (
    channel text NOT NULL,
    last_receipt_at timestamp with time zone,
    gate_closed boolean DEFAULT false NOT NULL,
    changed_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT feed_health_pkey PRIMARY KEY (channel)
);

CREATE TABLE message_events (
    id bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    message_id uuid NOT NULL,
    at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    kind text NOT NULL,
    detail jsonb DEFAULT '{}'::jsonb NOT NULL,
    CONSTRAINT message_events_message_id_fkey FOREIGN KEY (message_id) REFERENCES messages(id) ON DELETE CASCADE,
    CONSTRAINT message_events_pkey PRIMARY KEY (id)
);
CREATE INDEX message_events_message ON public.message_events USING btree (message_id, id);

CREATE TABLE messages (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    idempotency_key text,
    channel text NOT NULL,
    to_number text NOT NULL,
    from_number text NOT NULL,
    client_task_id text,
    params jsonb NOT NULL,
    fallback_rule text NOT NULL,
    fallback_duration_s integer,
    sms_text text,
    chat_state text DEFAULT 'accepted'::text NOT NULL,
    fallback_state text NOT NULL,
    provider_message_id text,
    send_attempts integer DEFAULT 0 NOT NULL,
    next_attempt_at timestamp with time zone DEFAULT now() NOT NULL,
    send_lease_until timestamp with time zone,
    last_error text,
    due_at timestamp with time zone,
    fire_reason text,
    fire_lease_until timestamp with time zone,
    hold_reason text,
    sms_attempts integer DEFAULT 0 NOT NULL,
    sms_provider_id text,
    double_delivered boolean DEFAULT false NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    sent_at timestamp with time zone,
    fired_at timestamp with time zone,
    send_started_at timestamp with time zone,
    sms_started_at timestamp with time zone,
    sms_last_error text,
    reconcile_at timestamp with time zone,
    reconcile_attempts integer DEFAULT 0 NOT NULL,
    request_hash text,
    CONSTRAINT chat_state_valid CHECK (chat_state = ANY (ARRAY['accepted'::text, 'sending'::text, 'unknown'::text, 'sent'::text, 'send_failed'::text, 'failed'::text, 'delivered'::text, 'read'::text])),
    CONSTRAINT fallback_state_valid CHECK (fallback_state = ANY (ARRAY['none'::text, 'armed'::text, 'held'::text, 'firing'::text, 'sms_sent'::text, 'sms_delivered'::text, 'sms_failed'::text, 'cancelled'::text, 'suppressed'::text])),
    CONSTRAINT messages_idempotency_key_key UNIQUE (idempotency_key),
    CONSTRAINT messages_pkey PRIMARY KEY (id)
);
CREATE INDEX messages_channel_sent ON public.messages USING btree (channel, sent_at) WHERE (sent_at IS NOT NULL);
CREATE INDEX messages_client_task_id ON public.messages USING btree (client_task_id, created_at) WHERE (client_task_id IS NOT NULL);
CREATE INDEX messages_created ON public.messages USING btree (created_at);
CREATE INDEX messages_due ON public.messages USING btree (due_at) WHERE ((fallback_state = 'armed'::text) AND (due_at IS NOT NULL));
CREATE INDEX messages_fired ON public.messages USING btree (fired_at) WHERE (fired_at IS NOT NULL);
CREATE INDEX messages_firing ON public.messages USING btree (fire_lease_until) WHERE (fallback_state = 'firing'::text);
CREATE INDEX messages_held ON public.messages USING btree (hold_reason, updated_at) WHERE (fallback_state = 'held'::text);
CREATE INDEX messages_provider_id ON public.messages USING btree (provider_message_id) WHERE (provider_message_id IS NOT NULL);
CREATE INDEX messages_reconcile ON public.messages USING btree (reconcile_at) WHERE ((chat_state = 'unknown'::text) AND (reconcile_at IS NOT NULL));
CREATE INDEX messages_send_queue ON public.messages USING btree (next_attempt_at) WHERE (chat_state = 'accepted'::text);
CREATE INDEX messages_sending ON public.messages USING btree (send_lease_until) WHERE (chat_state = 'sending'::text);
CREATE INDEX messages_to ON public.messages USING btree (to_number, created_at);
CREATE INDEX messages_unknown ON public.messages USING btree (updated_at) WHERE (chat_state = 'unknown'::text);

CREATE TABLE rate_limits (
    name text NOT NULL,
    tokens double precision NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    CONSTRAINT rate_limits_pkey PRIMARY KEY (name)
);

CREATE TABLE receipts (
    id bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    kind text NOT NULL,
    source text NOT NULL,
    provider_id text NOT NULL,
    status text NOT NULL,
    task_id text,
    message_id uuid,
    raw jsonb NOT NULL,
    received_at timestamp with time zone DEFAULT now() NOT NULL,
    applied_at timestamp with time zone,
    CONSTRAINT receipts_dedupe UNIQUE (kind, provider_id, status),
    CONSTRAINT receipts_pkey PRIMARY KEY (id)
);
CREATE INDEX receipts_message ON public.receipts USING btree (message_id) WHERE (message_id IS NOT NULL);
CREATE INDEX receipts_parked ON public.receipts USING btree (provider_id) WHERE (applied_at IS NULL);
CREATE INDEX receipts_received_brin ON public.receipts USING brin (received_at);

CREATE TABLE schema_migrations (
    version text NOT NULL,
    name text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT schema_migrations_pkey PRIMARY KEY (version)
);

CREATE TABLE ui_sessions (
    id_hash text NOT NULL,
    token_fp text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    revoked_at timestamp with time zone,
    CONSTRAINT ui_sessions_pkey PRIMARY KEY (id_hash)
);
CREATE INDEX ui_sessions_expires ON public.ui_sessions USING btree (expires_at);
