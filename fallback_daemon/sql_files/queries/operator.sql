-- Operator API: search, stats, actions' look-ups, dead letters (fallback_daemon/operations.py).

-- name: force_custom_plan --
-- Plan the next statements of this transaction with their actual values, so search_messages' unused
-- "$n IS NULL OR …" filters fold away and the index of the filter that is given is used.
SET LOCAL plan_cache_mode = force_custom_plan;

-- name: search_messages --
-- $1 id uuid, $2 provider_message_id text, $3 client_task_id text, $4 to_number text, $5 chat_state text[],
-- $6 fallback_state text[], $7 channel text[], $8 since timestamptz, $9 until timestamptz,
-- $10 cursor created_at timestamptz, $11 cursor id uuid, $12 limit int. NULL = no filter. Newest first;
-- keyset pagination over (created_at, id). Run after force_custom_plan: each access path then uses its
-- index (primary key, messages_provider_id, messages_client_task_id, messages_to, messages_created).
SELECT id, channel, to_number, client_task_id, chat_state, fallback_state, fallback_rule, provider_message_id,
       due_at, fire_reason, hold_reason, double_delivered, last_error, created_at, updated_at, fired_at
FROM messages
WHERE ($1::uuid IS NULL OR id = $1::uuid)
  AND ($2::text IS NULL OR provider_message_id = $2::text)
  AND ($3::text IS NULL OR client_task_id = $3::text)
  AND ($4::text IS NULL OR to_number = $4::text)
  AND ($5::text[] IS NULL OR chat_state = ANY($5::text[]))
  AND ($6::text[] IS NULL OR fallback_state = ANY($6::text[]))
  AND ($7::text[] IS NULL OR channel = ANY($7::text[]))
  AND ($8::timestamptz IS NULL OR created_at >= $8::timestamptz)
  AND ($9::timestamptz IS NULL OR created_at < $9::timestamptz)
  AND ($10::timestamptz IS NULL
       OR (created_at <= $10::timestamptz AND (created_at, id) < ($10::timestamptz, $11::uuid)))
ORDER BY created_at DESC, id DESC
LIMIT $12;

-- name: message_for_action --
-- $1 id uuid. What an action checks before it asks the policy (leases: is a provider call in flight?).
SELECT id, chat_state, fallback_state, hold_reason, send_lease_until, fire_lease_until,
       send_lease_until > now() AS send_in_flight, fire_lease_until > now() AS fire_in_flight
FROM messages WHERE id = $1;

-- name: held_ids --
-- $1 channel text (NULL: any), $2 hold_reason text (NULL: any), $3 ids uuid[] (NULL: any), $4 limit int.
-- Held fallbacks matching a filter (messages_held partial index), oldest first.
SELECT id, hold_reason FROM messages
WHERE fallback_state = 'held'
  AND ($1::text IS NULL OR channel = $1::text)
  AND ($2::text IS NULL OR hold_reason = $2::text)
  AND ($3::uuid[] IS NULL OR id = ANY($3::uuid[]))
ORDER BY updated_at, id
LIMIT $4;

-- name: notify_channel --
-- $1 channel text. Wakes the loops listening on it (the sender after a re-drive); polling is the backstop.
SELECT pg_notify($1::text, '');

-- name: stats_states --
-- $1 window seconds float8. Messages created in the window, by their current chat and fallback state.
SELECT chat_state, fallback_state, count(*)::bigint AS n
FROM messages WHERE created_at >= now() - $1 * interval '1 second'
GROUP BY chat_state, fallback_state;

-- name: stats_fired --
-- $1 window seconds float8. Fallbacks fired in the window, by trigger, with how many were double delivered.
SELECT coalesce(fire_reason, 'unknown') AS reason, count(*)::bigint AS fired,
       count(*) FILTER (WHERE double_delivered)::bigint AS double_delivered,
       count(*) FILTER (WHERE fallback_state = 'sms_delivered')::bigint AS sms_delivered,
       count(*) FILTER (WHERE fallback_state = 'sms_failed')::bigint AS sms_failed
FROM messages WHERE fired_at >= now() - $1 * interval '1 second'
GROUP BY 1;

-- name: stats_suppressed --
-- $1 window seconds float8. Suppressed fallbacks of messages created in the window, by the outcome that
-- suppressed them (read from the message's own timeline: one index probe per suppressed row).
SELECT coalesce(e.reason, 'unknown') AS reason, count(*)::bigint AS n
FROM messages m
LEFT JOIN LATERAL (
    SELECT detail->>'outcome' AS reason FROM message_events
    WHERE message_id = m.id AND detail->>'fallback' = 'suppressed'
    ORDER BY id LIMIT 1
) e ON true
WHERE m.created_at >= now() - $1 * interval '1 second' AND m.fallback_state = 'suppressed'
GROUP BY 1;

-- name: stats_pending_timers --
-- Armed fallbacks with a timer, by due-time bucket (the messages_due partial index; all, not windowed).
SELECT count(*) FILTER (WHERE due_at <= now())::bigint AS overdue,
       count(*) FILTER (WHERE due_at > now() AND due_at <= now() + interval '1 minute')::bigint AS lt_1m,
       count(*) FILTER (WHERE due_at > now() + interval '1 minute'
                          AND due_at <= now() + interval '5 minutes')::bigint AS lt_5m,
       count(*) FILTER (WHERE due_at > now() + interval '5 minutes'
                          AND due_at <= now() + interval '15 minutes')::bigint AS lt_15m,
       count(*) FILTER (WHERE due_at > now() + interval '15 minutes'
                          AND due_at <= now() + interval '1 hour')::bigint AS lt_1h,
       count(*) FILTER (WHERE due_at > now() + interval '1 hour')::bigint AS later,
       extract(epoch FROM (now() - min(due_at)))::float8 AS oldest_overdue_s
FROM messages WHERE fallback_state = 'armed' AND due_at IS NOT NULL;

-- name: stats_held --
-- Held fallbacks by reason and channel (messages_held partial index; all, not windowed).
SELECT coalesce(hold_reason, 'unknown') AS reason, channel, count(*)::bigint AS n,
       extract(epoch FROM (now() - min(updated_at)))::float8 AS oldest_s
FROM messages WHERE fallback_state = 'held'
GROUP BY 1, 2 ORDER BY 1, 2;

-- name: stats_pipeline --
-- Where work is right now (each through its partial index): the send queue, sends in flight or unknown,
-- firings in flight; "stale" = the lease ran out (the recovery sweep takes it within seconds).
SELECT
    (SELECT count(*) FROM messages WHERE chat_state = 'accepted' AND next_attempt_at <= now())::bigint
        AS queued_due,
    (SELECT count(*) FROM messages WHERE chat_state = 'accepted' AND next_attempt_at > now())::bigint
        AS queued_retry,
    (SELECT extract(epoch FROM (now() - min(next_attempt_at))) FROM messages
      WHERE chat_state = 'accepted' AND next_attempt_at <= now())::float8 AS oldest_queued_s,
    (SELECT count(*) FROM messages WHERE chat_state = 'sending')::bigint AS sending,
    (SELECT count(*) FROM messages WHERE chat_state = 'sending' AND send_lease_until < now())::bigint
        AS sending_stale,
    (SELECT count(*) FROM messages WHERE chat_state = 'unknown')::bigint AS unknown,
    (SELECT count(*) FROM messages WHERE fallback_state = 'firing')::bigint AS firing,
    (SELECT count(*) FROM messages WHERE fallback_state = 'firing' AND fire_lease_until < now())::bigint
        AS firing_stale;

-- name: stats_sending --
-- $1 window seconds float8. Sends in the window: last success per channel, and the commonest errors.
SELECT channel, max(sent_at) AS last_sent_at,
       extract(epoch FROM (now() - max(sent_at)))::float8 AS since_last_sent_s,
       count(*) FILTER (WHERE sent_at IS NOT NULL)::bigint AS sent,
       count(*) FILTER (WHERE chat_state = 'send_failed')::bigint AS send_failed
FROM messages WHERE created_at >= now() - $1 * interval '1 second'
GROUP BY channel ORDER BY channel;

-- name: stats_errors --
-- $1 window seconds float8, $2 limit int. The commonest last_error of messages created in the window.
SELECT last_error AS error, count(*)::bigint AS n
FROM messages WHERE created_at >= now() - $1 * interval '1 second' AND last_error IS NOT NULL
GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $2;

-- name: stats_receipts --
-- $1 window seconds float8, $2 sample int. The newest $2 receipts received in the window, by source, kind
-- and channel: count, last arrival, and lag = arrival − the provider's Timestamp (ChatApp reports carry it
-- in Unix ms). Bounded by the sample so that the query stays cheap at 10,000 receipts/s.
WITH s AS (
    SELECT id, source, kind, message_id, received_at, raw FROM receipts
    WHERE received_at >= now() - $1 * interval '1 second'
    ORDER BY id DESC LIMIT $2
), l AS (
    SELECT s.source, s.kind, coalesce(m.channel, 'unmatched') AS channel, s.received_at,
           CASE WHEN s.kind = 'chatapp' AND (s.raw->>'Timestamp') ~ '^[0-9]{1,18}(\.[0-9]+)?$'
                THEN extract(epoch FROM (s.received_at - to_timestamp((s.raw->>'Timestamp')::numeric / 1000)))
           END::float8 AS lag_s
    FROM s LEFT JOIN messages m ON m.id = s.message_id
)
SELECT source, kind, channel, count(*)::bigint AS n, max(received_at) AS last_at,
       extract(epoch FROM (now() - max(received_at)))::float8 AS since_last_s,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_s) AS lag_p50_s,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_s) AS lag_p99_s,
       max(lag_s) AS lag_max_s
FROM l GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;

-- name: stats_feed_health --
-- The receipt-feed health per channel as the gate keeps it (feed_health).
SELECT channel, last_receipt_at, extract(epoch FROM (now() - last_receipt_at))::float8 AS since_last_s,
       gate_closed, changed_at
FROM feed_health ORDER BY channel;

-- name: stats_dead_letters --
-- Dead letters not replayed yet (dead_letters_pending partial index), by source and kind.
SELECT source, kind, count(*)::bigint AS n, min(received_at) AS oldest_at
FROM dead_letters WHERE replayed_at IS NULL
GROUP BY 1, 2 ORDER BY 1, 2;

-- name: list_dead_letters --
-- $1 pending only bool, $2 cursor id bigint (NULL: from the newest), $3 limit int. Newest first.
SELECT id, source, queue, kind, queue_message_id, body, error, received_at, replayed_at, replayed_by,
       replay_reason
FROM dead_letters
WHERE (NOT $1::bool OR replayed_at IS NULL) AND ($2::bigint IS NULL OR id < $2::bigint)
ORDER BY id DESC LIMIT $3;

-- name: lock_dead_letter --
-- $1 id bigint
SELECT id, source, queue, kind, body, replayed_at FROM dead_letters WHERE id = $1 FOR UPDATE;

-- name: mark_dead_letter_replayed --
-- $1 id bigint, $2 actor text, $3 reason text
UPDATE dead_letters SET replayed_at = now(), replayed_by = $2, replay_reason = $3 WHERE id = $1
RETURNING replayed_at;

-- name: db_now --
-- The database clock (the only clock).
SELECT now();

-- name: lock_messages_for_action --
-- $1 ids uuid[]. The rows an operator action decides on, locked in id order (as lock_messages, so concurrent
-- batches cannot deadlock), with fire_reason: an armed fallback that has one is due now (it was fired; the
-- timer loop claims it within moments), so a cancel is refused rather than racing that claim.
SELECT id, chat_state, fallback_state, fallback_rule, double_delivered, fire_reason
FROM messages WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE;

-- name: held_reason_of --
-- $1 id uuid. Why the fallback is held (NULL when it is not held).
SELECT hold_reason FROM messages WHERE id = $1 AND fallback_state = 'held';

-- name: ui_session_token_fp --
-- $1 SHA-256 (hex) of the presented /ui session id. The fingerprint of the token a live session (not revoked,
-- not expired on the database clock) was opened with; web/ui.py maps it to the role of a current token (a
-- changed or removed token matches none: the session is over). Table ui_sessions (migration 0006).
SELECT token_fp FROM ui_sessions WHERE id_hash = $1 AND revoked_at IS NULL AND expires_at > now();

-- ---- charts: per-minute series (opstats.series; tables of migration 0007) ----------------------------------

-- name: series_lock_progress --
-- The roll-up mark, locked; no row when another transaction is rolling up right now (it is skipped, not
-- waited for: that one writes the same minutes).
SELECT rolled_through FROM event_minutes_progress FOR UPDATE SKIP LOCKED;

-- name: series_bounds --
-- $1 range seconds float8, $2 settle seconds float8, $3 rolled_through timestamptz. The minutes to roll up
-- now: from the mark (at most the chart's range back) to the last minute that closed $2 seconds ago (an event
-- is stamped when inserted and seen at commit: the settle time covers transactions still open).
SELECT greatest($3::timestamptz, date_trunc('minute', now() - $1 * interval '1 second')) AS lo,
       date_trunc('minute', now() - $2 * interval '1 second') AS hi,
       date_trunc('minute', now() - $1 * interval '1 second') AS range_start;

-- name: series_roll_up --
-- $1 lo timestamptz, $2 hi timestamptz. Counts of [lo, hi) from the timeline (message_events_at_brin) into
-- event_minutes; the same series as series_live.
INSERT INTO event_minutes (minute, channel, series, n)
SELECT date_trunc('minute', e.at), m.channel, s.series, count(*)
FROM message_events e
JOIN messages m ON m.id = e.message_id
CROSS JOIN LATERAL (SELECT CASE
    WHEN e.kind = 'send_ok' THEN 'sent'
    WHEN e.kind = 'chat_receipt' AND e.detail->>'status' = 'Delivered' THEN 'delivered'
    WHEN e.kind = 'chat_receipt' AND e.detail->>'status' = 'Read' THEN 'read'
    WHEN e.kind = 'chat_receipt' AND e.detail->>'status' = 'Failed' THEN 'failed'
    WHEN e.kind = 'fallback_fired' THEN 'fired'
    WHEN e.kind = 'sms_sent' THEN 'sms_sent'
    WHEN e.kind = 'sms_receipt' AND e.detail->>'outcome' = 'sms_delivered' THEN 'sms_delivered'
    WHEN e.kind = 'sms_receipt' AND e.detail->>'outcome' = 'sms_failed' THEN 'sms_failed'
END AS series) s
WHERE e.at >= $1::timestamptz AND e.at < $2::timestamptz
  AND e.kind IN ('send_ok', 'chat_receipt', 'fallback_fired', 'sms_sent', 'sms_receipt')
  AND s.series IS NOT NULL
GROUP BY 1, 2, 3
ON CONFLICT DO NOTHING;

-- name: series_mark --
-- $1 hi timestamptz. Everything before it is rolled up.
UPDATE event_minutes_progress SET rolled_through = $1::timestamptz WHERE rolled_through < $1::timestamptz;

-- name: series_progress --
-- The roll-up mark (NULL: nothing rolled up yet).
SELECT nullif(rolled_through, '-infinity') FROM event_minutes_progress;

-- name: series_purge --
-- Roll-up minutes older than the longest chart range (2 days, by the primary key's leading column).
DELETE FROM event_minutes WHERE minute < now() - interval '2 days';

-- name: series_read --
-- $1 range start timestamptz, $2 rolled_through timestamptz (NULL: none yet). The chart: rolled-up minutes of [start, mark),
-- then the minutes since the mark counted live from the timeline (a few minutes, message_events_at_brin).
SELECT minute, channel, series, n FROM event_minutes
WHERE minute >= $1::timestamptz AND minute < coalesce($2::timestamptz, '-infinity')
UNION ALL
SELECT date_trunc('minute', e.at) AS minute, m.channel, s.series, count(*) AS n
FROM message_events e
JOIN messages m ON m.id = e.message_id
CROSS JOIN LATERAL (SELECT CASE
    WHEN e.kind = 'send_ok' THEN 'sent'
    WHEN e.kind = 'chat_receipt' AND e.detail->>'status' = 'Delivered' THEN 'delivered'
    WHEN e.kind = 'chat_receipt' AND e.detail->>'status' = 'Read' THEN 'read'
    WHEN e.kind = 'chat_receipt' AND e.detail->>'status' = 'Failed' THEN 'failed'
    WHEN e.kind = 'fallback_fired' THEN 'fired'
    WHEN e.kind = 'sms_sent' THEN 'sms_sent'
    WHEN e.kind = 'sms_receipt' AND e.detail->>'outcome' = 'sms_delivered' THEN 'sms_delivered'
    WHEN e.kind = 'sms_receipt' AND e.detail->>'outcome' = 'sms_failed' THEN 'sms_failed'
END AS series) s
WHERE e.at >= greatest($1::timestamptz, $2::timestamptz)  -- greatest() skips a NULL mark
  AND e.kind IN ('send_ok', 'chat_receipt', 'fallback_fired', 'sms_sent', 'sms_receipt')
  AND s.series IS NOT NULL
GROUP BY 1, 2, 3;
