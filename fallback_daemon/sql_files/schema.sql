-- The schema that applying every migration (sql_files/migrations/*.sql, in order) to an empty database
-- produces, read from the Postgres catalog. Generated: do not edit. Regenerate after changing a migration:
--     .venv/bin/python -m tests.schema_snapshot --write
-- tests/integration/test_schema.py fails when this file and the migrations disagree.

CREATE OR REPLACE FUNCTION public.record_provider_opt_out()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    INSERT INTO sms_opt_outs (number, source, reason, message_id)
    SELECT m.to_number, 'provider', left(coalesce(NEW.detail->>'error', NEW.detail->>'error_code'), 500), m.id
    FROM messages m WHERE m.id = NEW.message_id
    ON CONFLICT (number) DO NOTHING;
    RETURN NULL;
END;
$function$;

CREATE OR REPLACE FUNCTION public.webhook_enqueue()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    PERFORM 1 FROM webhook_endpoints WHERE disabled_at IS NULL LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;  -- no subscriber: the whole cost of the outbox
    END IF;
    WITH ev AS (
        SELECT n.id AS event_id, n.message_id, n.at, n.kind, n.detail, t.type, t.ord,
               m.client_task_id, m.idempotency_key, m.channel, m.params->>'CustSpaceId' AS cust_space_id,
               coalesce(n.detail->>'chat', m.chat_state) AS chat_state,
               coalesce(n.detail->>'fallback', m.fallback_state) AS fallback_state,
               m.hold_reason, m.fire_reason
        FROM new_events n
        JOIN messages m ON m.id = n.message_id
        CROSS JOIN LATERAL unnest(webhook_event_types(
            n.kind, n.detail,
            CASE WHEN n.detail->>'outcome' = 'operator_fire' THEN webhook_was_held(n.message_id, n.id) END
        )) WITH ORDINALITY AS t(type, ord)
    ), matched AS (
        SELECT ev.*, e.id AS endpoint_id
        FROM ev JOIN webhook_endpoints e
          ON e.disabled_at IS NULL
         AND (cardinality(e.event_types) = 0 OR ev.type = ANY(e.event_types))
         AND (cardinality(e.channels) = 0 OR ev.channel = ANY(e.channels))
         AND (cardinality(e.cust_space_ids) = 0 OR ev.cust_space_id = ANY(e.cust_space_ids))
    ), counted AS (
        SELECT message_id, endpoint_id, count(*)::int AS n FROM matched GROUP BY message_id, endpoint_id
    ), seq AS (
        INSERT INTO webhook_sequences AS s (message_id, endpoint_id, last_seq)
        SELECT message_id, endpoint_id, n FROM counted ORDER BY message_id, endpoint_id
        ON CONFLICT (message_id, endpoint_id) DO UPDATE SET last_seq = s.last_seq + excluded.last_seq
        RETURNING s.message_id, s.endpoint_id, s.last_seq
    ), numbered AS (
        SELECT matched.*,
               (seq.last_seq - counted.n + row_number() OVER (
                   PARTITION BY matched.message_id, matched.endpoint_id ORDER BY matched.event_id, matched.ord
               ))::int AS sequence
        FROM matched
        JOIN counted USING (message_id, endpoint_id)
        JOIN seq USING (message_id, endpoint_id)
    )
    INSERT INTO webhook_deliveries (endpoint_id, message_id, event_id, event_type, sequence, payload)
    SELECT endpoint_id, message_id, event_id, type, sequence,
           jsonb_build_object(
               'type', type,
               'timestamp', to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               'data', jsonb_build_object(
                   'message_id', message_id,
                   'task_id', client_task_id,
                   'idempotency_key', idempotency_key,
                   'sequence', sequence,
                   'channel', channel,
                   'cust_space_id', cust_space_id,
                   'chat_state', chat_state,
                   'fallback_state', fallback_state,
                   'reason', CASE
                       WHEN type = 'fallback.fired' THEN coalesce(detail->>'reason', fire_reason)
                       WHEN type = 'fallback.blocked' THEN coalesce(detail->>'guard', detail->>'reason', hold_reason)
                       WHEN type = 'fallback.held' THEN coalesce(detail->>'reason', hold_reason)
                       WHEN type = 'fallback.cancelled' THEN CASE
                           WHEN detail->>'outcome' = 'operator_cancelled' THEN 'operator'
                           WHEN detail->>'outcome' = 'sms_not_needed' THEN 'chat_success_before_sms'
                           ELSE 'chat_success' END
                       WHEN type = 'fallback.dropped' THEN 'operator'
                       WHEN type = 'fallback.released' THEN 'operator'
                   END,
                   'blocked_action', CASE WHEN type = 'fallback.blocked' THEN detail->>'action' END,
                   'error', detail->>'error',
                   'error_code', detail->>'error_code',
                   'status', coalesce(detail->>'status', detail->>'sms_status'),
                   'event_id', event_id
               )
           )
    FROM numbered
    ORDER BY message_id, endpoint_id, sequence;
    IF FOUND THEN
        PERFORM pg_notify('fallback_webhooks', '');
    END IF;
    RETURN NULL;
END
$function$;

CREATE OR REPLACE FUNCTION public.webhook_event_types(kind text, detail jsonb, was_held boolean)
 RETURNS text[]
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT array_remove(ARRAY[
        CASE WHEN o ~ '^(send_ok|send_failed|receipt)' AND o !~ '_(stale|ignored)$' THEN
            CASE detail->>'chat' WHEN 'sent' THEN 'message.sent' WHEN 'delivered' THEN 'message.delivered'
                                 WHEN 'read' THEN 'message.read' WHEN 'failed' THEN 'message.failed'
                                 WHEN 'send_failed' THEN 'message.failed' END
        END,
        CASE WHEN o LIKE '%\_double\_delivered' THEN 'message.double_delivered' END,
        CASE WHEN kind = 'fallback_fired' OR o = 'fallback_fired' THEN 'fallback.fired' END,
        CASE o WHEN 'sms_sent' THEN 'fallback.sms_sent' WHEN 'sms_delivered' THEN 'fallback.sms_delivered'
               WHEN 'sms_failed' THEN 'fallback.sms_failed' WHEN 'sms_rejected' THEN 'fallback.sms_failed'
               WHEN 'operator_dropped' THEN 'fallback.dropped' WHEN 'operator_cancelled' THEN 'fallback.cancelled'
               WHEN 'sms_not_needed' THEN 'fallback.cancelled' END,
        CASE WHEN o LIKE '%\_fallback\_cancelled' THEN 'fallback.cancelled' END,
        CASE WHEN kind = 'fallback_blocked' OR (kind IN ('fallback_held', 'fallback_dropped', 'fallback_suppressed')
                                                AND webhook_is_guard(detail->>'reason'))
             THEN 'fallback.blocked'
             WHEN kind = 'fallback_held' OR o IN ('sms_retries_exhausted', 'firing_parked')
             THEN CASE WHEN detail->>'action' IS DISTINCT FROM 'redrive' THEN 'fallback.held' END
        END,
        CASE WHEN o = 'operator_fire' AND was_held AND detail->>'action' IS DISTINCT FROM 'redrive'
             THEN 'fallback.released' END
    ], NULL)
    FROM (SELECT coalesce(detail->>'outcome', '') AS o) AS x
$function$;

CREATE OR REPLACE FUNCTION public.webhook_is_guard(reason text)
 RETURNS boolean
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT coalesce(reason ~ '^(budget|opt_out|opted_out|optout|deny|denied|blocked|toll_fraud|fraud)', false)
$function$;

CREATE OR REPLACE FUNCTION public.webhook_was_held(mid uuid, before_id bigint)
 RETURNS boolean
 LANGUAGE sql
 STABLE
AS $function$
    SELECT coalesce((
        SELECT kind = 'fallback_held' OR (kind = 'fallback_blocked' AND detail->>'action' = 'hold')
               OR detail->>'fallback' = 'held'
        FROM message_events
        WHERE message_id = mid AND id < before_id
          AND (kind IN ('fallback_held', 'fallback_blocked', 'fallback_fired') OR detail ? 'fallback')
        ORDER BY id DESC LIMIT 1
    ), false)
$function$;

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

CREATE TABLE event_minutes (
    minute timestamp with time zone NOT NULL,
    channel text NOT NULL,
    series text NOT NULL,
    n bigint NOT NULL,
    CONSTRAINT event_minutes_pkey PRIMARY KEY (minute, channel, series)
);

CREATE TABLE event_minutes_progress (
    singleton boolean DEFAULT true NOT NULL,
    rolled_through timestamp with time zone NOT NULL,
    CONSTRAINT event_minutes_progress_pkey PRIMARY KEY (singleton),
    CONSTRAINT event_minutes_progress_singleton_check CHECK (singleton)
);

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
    CONSTRAINT message_events_pkey PRIMARY KEY (id)
);
CREATE INDEX message_events_at_brin ON public.message_events USING brin (at) WITH (autosummarize='on');
CREATE INDEX message_events_message ON public.message_events USING btree (message_id, id);
CREATE TRIGGER message_events_opt_out AFTER INSERT ON message_events FOR EACH ROW WHEN ((new.detail ->> 'error_class'::text) = 'opted_out'::text) EXECUTE FUNCTION record_provider_opt_out();
CREATE TRIGGER message_events_webhooks AFTER INSERT ON message_events REFERENCING NEW TABLE AS new_events FOR EACH STATEMENT EXECUTE FUNCTION webhook_enqueue();

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
    urgent boolean DEFAULT false NOT NULL,
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
CREATE INDEX messages_sms_sent ON public.messages USING btree (fired_at) WHERE (fallback_state = 'sms_sent'::text);
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

CREATE TABLE sms_budget_usage (
    scope text NOT NULL,
    key text NOT NULL,
    day date NOT NULL,
    used integer DEFAULT 0 NOT NULL,
    CONSTRAINT sms_budget_usage_pkey PRIMARY KEY (scope, key, day)
);

CREATE TABLE sms_budgets (
    scope text NOT NULL,
    key text NOT NULL,
    daily_limit integer NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_by text,
    CONSTRAINT sms_budgets_global_key CHECK ((scope = 'global'::text) = (key = ''::text)),
    CONSTRAINT sms_budgets_limit_valid CHECK (daily_limit >= 0),
    CONSTRAINT sms_budgets_pkey PRIMARY KEY (scope, key),
    CONSTRAINT sms_budgets_scope_valid CHECK (scope = ANY (ARRAY['global'::text, 'prefix'::text, 'space'::text]))
);

CREATE TABLE sms_opt_outs (
    number text NOT NULL,
    source text NOT NULL,
    reason text,
    message_id uuid,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT sms_opt_outs_pkey PRIMARY KEY (number)
);
CREATE INDEX sms_opt_outs_created ON public.sms_opt_outs USING btree (created_at, number);

CREATE TABLE ui_sessions (
    id_hash text NOT NULL,
    token_fp text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    revoked_at timestamp with time zone,
    CONSTRAINT ui_sessions_pkey PRIMARY KEY (id_hash)
);
CREATE INDEX ui_sessions_expires ON public.ui_sessions USING btree (expires_at);

CREATE TABLE webhook_deliveries (
    id bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    endpoint_id bigint NOT NULL,
    message_id uuid NOT NULL,
    event_id bigint NOT NULL,
    event_type text NOT NULL,
    sequence integer NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    state text DEFAULT 'pending'::text NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    next_attempt_at timestamp with time zone DEFAULT now() NOT NULL,
    last_attempt_at timestamp with time zone,
    last_status integer,
    last_error text,
    delivered_at timestamp with time zone,
    CONSTRAINT webhook_deliveries_endpoint_id_fkey FOREIGN KEY (endpoint_id) REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    CONSTRAINT webhook_deliveries_pkey PRIMARY KEY (id),
    CONSTRAINT webhook_delivery_state_valid CHECK (state = ANY (ARRAY['pending'::text, 'delivered'::text, 'failed'::text]))
);
CREATE INDEX webhook_deliveries_due ON public.webhook_deliveries USING btree (next_attempt_at) WHERE (state = 'pending'::text);
CREATE INDEX webhook_deliveries_endpoint ON public.webhook_deliveries USING btree (endpoint_id, id);
CREATE INDEX webhook_deliveries_finished ON public.webhook_deliveries USING btree (created_at) WHERE (state <> 'pending'::text);

CREATE TABLE webhook_endpoints (
    id bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    url text NOT NULL,
    secret text NOT NULL,
    event_types text[] DEFAULT '{}'::text[] NOT NULL,
    channels text[] DEFAULT '{}'::text[] NOT NULL,
    cust_space_ids text[] DEFAULT '{}'::text[] NOT NULL,
    description text DEFAULT ''::text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    created_by text,
    failing_since timestamp with time zone,
    last_attempt_at timestamp with time zone,
    last_success_at timestamp with time zone,
    last_status integer,
    last_error text,
    disabled_at timestamp with time zone,
    disabled_reason text,
    CONSTRAINT webhook_endpoints_pkey PRIMARY KEY (id)
);

CREATE TABLE webhook_sequences (
    message_id uuid NOT NULL,
    endpoint_id bigint NOT NULL,
    last_seq integer NOT NULL,
    CONSTRAINT webhook_sequences_endpoint_id_fkey FOREIGN KEY (endpoint_id) REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    CONSTRAINT webhook_sequences_pkey PRIMARY KEY (message_id, endpoint_id)
);
