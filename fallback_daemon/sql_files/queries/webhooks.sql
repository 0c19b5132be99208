-- Outcome events pushed to the application (fallback_daemon/webhooks.py, docs/webhooks.md). The outbox rows
-- themselves are written by the message_events trigger of migration 0008, never here.

-- name: insert_webhook_endpoint --
-- $1 url text, $2 secret text, $3 event_types text[], $4 channels text[], $5 cust_space_ids text[],
-- $6 description text, $7 created_by text
INSERT INTO webhook_endpoints (url, secret, event_types, channels, cust_space_ids, description, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id, url, event_types, channels, cust_space_ids, description, created_at, created_by, disabled_at,
          disabled_reason, failing_since, last_attempt_at, last_success_at, last_status, last_error;

-- name: webhook_endpoints_with_stats --
-- $1 endpoint id bigint (NULL: every endpoint). Each endpoint with its delivery figures: pending (and how many
-- of those are being retried), failed, delivered, the age of the oldest pending delivery (lag).
SELECT e.id, e.url, e.event_types, e.channels, e.cust_space_ids, e.description, e.created_at, e.created_by,
       e.disabled_at, e.disabled_reason, e.failing_since, e.last_attempt_at, e.last_success_at, e.last_status,
       e.last_error,
       coalesce(s.pending, 0)::int AS pending, coalesce(s.retrying, 0)::int AS retrying,
       coalesce(s.failed, 0)::int AS failed, coalesce(s.delivered, 0)::int AS delivered,
       coalesce(s.attempts, 0)::bigint AS attempts,
       coalesce(extract(epoch FROM (now() - s.oldest_pending)), 0)::float8 AS lag_s
FROM webhook_endpoints e
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE d.state = 'pending') AS pending,
           count(*) FILTER (WHERE d.state = 'pending' AND d.attempts > 0) AS retrying,
           count(*) FILTER (WHERE d.state = 'failed') AS failed,
           count(*) FILTER (WHERE d.state = 'delivered') AS delivered,
           sum(d.attempts) AS attempts,
           min(d.created_at) FILTER (WHERE d.state = 'pending') AS oldest_pending
    FROM webhook_deliveries d WHERE d.endpoint_id = e.id
) s ON true
WHERE $1::bigint IS NULL OR e.id = $1::bigint
ORDER BY e.id;

-- name: delete_webhook_endpoint --
-- $1 id bigint. Its deliveries and sequence counters go with it (ON DELETE CASCADE).
DELETE FROM webhook_endpoints WHERE id = $1 RETURNING id;

-- name: enable_webhook_endpoint --
-- $1 id bigint. Deliveries left pending while it was disabled are due again at once.
WITH e AS (
    UPDATE webhook_endpoints SET disabled_at = NULL, disabled_reason = NULL, failing_since = NULL
    WHERE id = $1 RETURNING id
), d AS (
    UPDATE webhook_deliveries SET next_attempt_at = now()
    WHERE endpoint_id = (SELECT id FROM e) AND state = 'pending' AND next_attempt_at > now()
)
SELECT id FROM e;

-- name: list_webhook_deliveries --
-- $1 endpoint id bigint, $2 state text (NULL: any), $3 before id bigint (NULL: newest first), $4 limit int
SELECT id, message_id, event_type, sequence, state, attempts, created_at, next_attempt_at, last_attempt_at,
       last_status, last_error, delivered_at, payload
FROM webhook_deliveries
WHERE endpoint_id = $1 AND ($2::text IS NULL OR state = $2::text) AND ($3::bigint IS NULL OR id < $3::bigint)
ORDER BY id DESC
LIMIT $4;

-- name: replay_webhook_deliveries --
-- $1 endpoint id bigint, $2 include delivered bool, $3 since timestamptz (NULL: any age), $4 ids bigint[]
-- (NULL: any), $5 limit int. Failed (and, if asked, delivered) deliveries are sent again from the start of the
-- schedule, with the same webhook-id. Locks in id order, like every bulk write.
WITH l AS (
    SELECT id FROM webhook_deliveries
    WHERE endpoint_id = $1
      AND (state = 'failed' OR ($2::bool AND state = 'delivered'))
      AND ($3::timestamptz IS NULL OR created_at >= $3::timestamptz)
      AND ($4::bigint[] IS NULL OR id = ANY($4::bigint[]))
    ORDER BY id LIMIT $5 FOR UPDATE
), u AS (
    UPDATE webhook_deliveries d SET state = 'pending', attempts = 0, next_attempt_at = now(), delivered_at = NULL
    FROM l WHERE d.id = l.id
    RETURNING d.id
), n AS (
    SELECT pg_notify('fallback_webhooks', '') WHERE EXISTS (SELECT 1 FROM u)
)
SELECT count(*)::int AS replayed, (SELECT count(*) FROM n)::int AS notified FROM u;

-- name: claim_webhook_deliveries --
-- $1 limit int, $2 lease seconds float8. Due deliveries of enabled endpoints, oldest due first; the lease (in
-- next_attempt_at) keeps other replicas off until the attempt's result is written, and a crashed attempt is
-- due again when it ends. `attempts` is bumped here: it is the fencing token of the result.
WITH c AS (
    SELECT d.id FROM webhook_deliveries d
    JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.disabled_at IS NULL
    WHERE d.state = 'pending' AND d.next_attempt_at <= now()
    ORDER BY d.next_attempt_at, d.id
    LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE webhook_deliveries d
SET attempts = d.attempts + 1, next_attempt_at = now() + $2 * interval '1 second', last_attempt_at = now()
FROM c, webhook_endpoints e
WHERE d.id = c.id AND d.id = ANY(ARRAY(SELECT id FROM c)) AND e.id = d.endpoint_id
RETURNING d.id, d.endpoint_id, d.attempts, d.payload::text AS body, e.url, e.secret,
          extract(epoch FROM (now() - d.created_at))::float8 AS age_s;

-- name: record_webhook_results --
-- $1 id bigint[], $2 attempts int[] (fencing tokens), $3 ok bool[], $4 http status int[] (NULL: no answer),
-- $5 error text[], $6 retry delay seconds float8[] (NULL: the schedule is exhausted), $7 disable after seconds
-- float8 (0: never). Writes each attempt's result, then each endpoint's health: a success clears failing_since,
-- a failure starts it, and an endpoint failing continuously for $7 is disabled. Returns per result what was
-- recorded (delivered, retry, exhausted) and the delivery's age; a result whose claim was lost returns nothing.
WITH r AS (
    SELECT * FROM unnest($1::bigint[], $2::int[], $3::bool[], $4::int[], $5::text[], $6::float8[])
             AS u(id, attempt, ok, status, error, delay)
), d AS (
    UPDATE webhook_deliveries w
    SET state = CASE WHEN r.ok THEN 'delivered' WHEN r.delay IS NULL THEN 'failed' ELSE 'pending' END,
        delivered_at = CASE WHEN r.ok THEN now() END,
        next_attempt_at = CASE WHEN r.ok OR r.delay IS NULL THEN w.next_attempt_at
                               ELSE now() + r.delay * interval '1 second' END,
        last_status = r.status, last_error = r.error
    FROM r
    WHERE w.id = r.id AND w.attempts = r.attempt AND w.state = 'pending'
    RETURNING w.id, w.endpoint_id, r.ok, r.status, r.error, w.state,
              extract(epoch FROM (now() - w.created_at))::float8 AS age_s
), per_endpoint AS (
    SELECT endpoint_id, bool_or(ok) AS any_ok, bool_or(NOT ok) AS any_failed,
           (array_agg(status ORDER BY id DESC))[1] AS status, (array_agg(error ORDER BY id DESC))[1] AS error
    FROM d GROUP BY endpoint_id
), locked AS (
    SELECT e.id FROM webhook_endpoints e JOIN per_endpoint p ON p.endpoint_id = e.id ORDER BY e.id FOR UPDATE OF e
), e AS (
    UPDATE webhook_endpoints e
    SET last_attempt_at = now(), last_status = p.status, last_error = p.error,
        last_success_at = CASE WHEN p.any_ok THEN now() ELSE e.last_success_at END,
        -- A batch with both: the endpoint answers again (the failures are retried on their schedule).
        failing_since = CASE WHEN p.any_ok THEN NULL ELSE coalesce(e.failing_since, now()) END,
        disabled_at = CASE WHEN NOT p.any_ok AND $7::float8 > 0 AND e.disabled_at IS NULL
                            AND coalesce(e.failing_since, now()) <= now() - $7::float8 * interval '1 second'
                           THEN now() ELSE e.disabled_at END,
        disabled_reason = CASE WHEN NOT p.any_ok AND $7::float8 > 0 AND e.disabled_at IS NULL
                                AND coalesce(e.failing_since, now()) <= now() - $7::float8 * interval '1 second'
                               THEN 'failing since ' || e.failing_since::text ELSE e.disabled_reason END
    FROM per_endpoint p, locked
    WHERE e.id = p.endpoint_id AND e.id = locked.id
    RETURNING e.id, e.disabled_at IS NOT NULL AND p.any_failed AS disabled
)
SELECT d.id, d.endpoint_id,
       CASE WHEN d.ok THEN 'delivered' WHEN d.state = 'failed' THEN 'exhausted' ELSE 'retry' END AS result,
       d.age_s, coalesce((SELECT bool_or(disabled) FROM e WHERE e.id = d.endpoint_id), false) AS endpoint_disabled
FROM d;

-- name: next_webhook_due_in --
-- Seconds until the next pending delivery of an enabled endpoint is due (NULL: none). Served by
-- webhook_deliveries_due.
SELECT extract(epoch FROM (min(d.next_attempt_at) - now()))::float8 AS seconds
FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.disabled_at IS NULL
WHERE d.state = 'pending';

-- name: webhook_gauges --
-- Per endpoint: pending deliveries and the age of the oldest one (0: none), for /metrics.
SELECT e.id, count(d.id)::int AS pending,
       coalesce(extract(epoch FROM (now() - min(d.created_at))), 0)::float8 AS lag_s
FROM webhook_endpoints e LEFT JOIN webhook_deliveries d ON d.endpoint_id = e.id AND d.state = 'pending'
GROUP BY e.id;

-- name: purge_webhook_deliveries --
-- $1 window seconds float8, $2 batch int. Delivered and failed deliveries older than the window (the retention
-- window of messages). Served by webhook_deliveries_finished.
WITH old AS (
    SELECT id FROM webhook_deliveries
    WHERE state <> 'pending' AND created_at < now() - $1::float8 * interval '1 second'
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM webhook_deliveries WHERE id = ANY(ARRAY(SELECT id FROM old))
RETURNING id;
