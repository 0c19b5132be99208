-- 0008 (expand): outcome events pushed to the application (webhooks), docs/webhooks.md.
--
-- The outbox is filled by a statement-level AFTER INSERT trigger on message_events: every state change already
-- writes its event rows in the transaction that makes it (outcomes._write, and the transitions done in SQL such
-- as the timer claim), so a delivery row exists exactly when the change it describes committed, whatever path
-- made it, and a rolled-back change leaves none. Without an active endpoint the trigger returns after one probe
-- of a tiny table.

-- Subscriptions. The secret is kept in clear: HMAC signing needs it (shown once, at creation). Empty arrays
-- mean "every event type / channel / CustSpaceId".
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url text NOT NULL,
    secret text NOT NULL,
    event_types text[] NOT NULL DEFAULT '{}',
    channels text[] NOT NULL DEFAULT '{}',
    cust_space_ids text[] NOT NULL DEFAULT '{}',
    description text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text,
    -- Delivery health: failing_since is the first failure after the last success (NULL while healthy); the
    -- endpoint is disabled once it has failed continuously for FALLBACK_WEBHOOK_DISABLE_AFTER_S.
    failing_since timestamptz,
    last_attempt_at timestamptz,
    last_success_at timestamptz,
    last_status integer,
    last_error text,
    disabled_at timestamptz,
    disabled_reason text
);

-- One row per (event, endpoint). `id` is the Standard Webhooks `webhook-id` (msg_<id>): the same on every retry.
-- While pending, next_attempt_at is the next attempt's time, or the lease's end while an attempt is out;
-- `attempts` (bumped at each claim) is the claim's fencing token.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id bigint NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    message_id uuid NOT NULL,  -- no foreign key: a delivery outlives the purge of its message
    event_id bigint NOT NULL,  -- message_events.id it was made from
    event_type text NOT NULL,
    sequence integer NOT NULL,  -- per (message, endpoint), from 1, without gaps
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    state text NOT NULL DEFAULT 'pending',
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz,
    last_status integer,
    last_error text,
    delivered_at timestamptz,
    CONSTRAINT webhook_delivery_state_valid CHECK (state IN ('pending', 'delivered', 'failed'))
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);
CREATE INDEX IF NOT EXISTS webhook_deliveries_finished ON webhook_deliveries (created_at) WHERE state <> 'pending';

-- The last sequence number given per (message, endpoint). Bumped by the trigger in the writer's transaction, so
-- a rolled-back change takes its numbers back with it (no gap) and writers of one message take turns on the row.
CREATE TABLE IF NOT EXISTS webhook_sequences (
    message_id uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    endpoint_id bigint NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    last_seq integer NOT NULL,
    CONSTRAINT webhook_sequences_pkey PRIMARY KEY (message_id, endpoint_id)
);

-- Hold reasons set by the guards at the moment of fallback (budgets, opt-outs, deny-listed prefixes): a held
-- fallback with one of these is reported as `fallback.blocked`, any other hold as `fallback.held`.
CREATE OR REPLACE FUNCTION webhook_is_guard(reason text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(reason ~ '^(budget|opt_out|opted_out|optout|deny|denied|blocked|toll_fraud|fraud)', false)
$$;

-- The webhook types one message_events row stands for (none for internal steps: retries, leases, lookups).
-- `outcome`, `chat`, `fallback` are in the detail of every event outcomes._write writes; the transitions done in
-- SQL (the timer claim) are recognised by their kind. `was_held`: the fallback was held before this event
-- (only asked for an operator's fire, which then is a release).
CREATE OR REPLACE FUNCTION webhook_event_types(kind text, detail jsonb, was_held boolean) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
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
$$;

-- Whether the message's fallback was held just before event `before_id` (its latest event naming a fallback
-- state). Asked only for an operator's fire, a rare event.
CREATE OR REPLACE FUNCTION webhook_was_held(mid uuid, before_id bigint) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce((
        SELECT kind = 'fallback_held' OR (kind = 'fallback_blocked' AND detail->>'action' = 'hold')
               OR detail->>'fallback' = 'held'
        FROM message_events
        WHERE message_id = mid AND id < before_id
          AND (kind IN ('fallback_held', 'fallback_blocked', 'fallback_fired') OR detail ? 'fallback')
        ORDER BY id DESC LIMIT 1
    ), false)
$$;

CREATE OR REPLACE FUNCTION webhook_enqueue() RETURNS trigger
LANGUAGE plpgsql AS $$
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
$$;

DROP TRIGGER IF EXISTS message_events_webhooks ON message_events;
CREATE TRIGGER message_events_webhooks
    AFTER INSERT ON message_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_enqueue();
