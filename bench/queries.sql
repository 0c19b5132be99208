-- The benchmark's own SQL (bench/harness.py loads it by name, like the daemon's sql/queries/*.sql):
-- seeding, the raw-SQL baselines, and the read-outs. Each block: `-- name: x --`, then its parameters.

-- name: raw_table --
-- A table equivalent to `messages` (same columns, defaults, constraints and partial indexes) for the baselines.
CREATE TABLE IF NOT EXISTS raw_messages (LIKE messages INCLUDING ALL);

-- name: truncate --
-- CASCADE: tables other features add that reference messages (webhook_sequences, ...) are emptied with it.
TRUNCATE messages, message_events, receipts, webhook_sequences, raw_messages CASCADE;

-- name: seed_armed --
-- $1 count int, $2 first due (unix time) float8, $3 spread seconds float8 (row i is due at $2 + $3*i/$1),
-- $4 first number int. Messages whose chat leg is done (sent) and whose fallback timer is armed.
INSERT INTO messages (channel, to_number, from_number, params, fallback_rule, fallback_duration_s, sms_text,
                      chat_state, fallback_state, due_at)
SELECT 'whatsapp', '65' || lpad((($4 + i) % 100000000)::text, 8, '0'), '6580000000',
       jsonb_build_object('ChannelType', 'whatsapp', 'TemplateParams', '{"n":"' || i || '"}'),
       'undelivered', 60, 'your order ' || i || ' has shipped', 'sent', 'armed',
       to_timestamp($2::float8 + $3::float8 * i / $1::int)
FROM generate_series(0, $1 - 1) AS i;

-- name: seed_raw_armed --
-- $1 count int, $2 first due (unix time) float8, $3 spread seconds float8, $4 first number int (as seed_armed)
INSERT INTO raw_messages (channel, to_number, from_number, params, fallback_rule, fallback_duration_s, sms_text,
                          chat_state, fallback_state, due_at)
SELECT 'whatsapp', '65' || lpad((($4 + i) % 100000000)::text, 8, '0'), '6580000000',
       jsonb_build_object('ChannelType', 'whatsapp', 'TemplateParams', '{"n":"' || i || '"}'),
       'undelivered', 60, 'your order ' || i || ' has shipped', 'sent', 'armed',
       to_timestamp($2::float8 + $3::float8 * i / $1::int)
FROM generate_series(0, $1 - 1) AS i;

-- name: raw_claim --
-- $1 limit int, $2 lease seconds float8. The plain FOR UPDATE SKIP LOCKED transition armed -> firing.
WITH c AS (
    SELECT id FROM raw_messages
    WHERE fallback_state = 'armed' AND due_at <= now()
    ORDER BY due_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE raw_messages m
SET fallback_state = 'firing', fired_at = now(), fire_lease_until = now() + $2 * interval '1 second'
FROM c WHERE m.id = c.id AND m.fallback_state = 'armed'
RETURNING m.id, m.to_number, m.sms_text, extract(epoch FROM m.due_at)::float8 AS due;

-- name: raw_next_due --
SELECT extract(epoch FROM (min(due_at) - now()))::float8 FROM raw_messages
WHERE fallback_state = 'armed' AND due_at IS NOT NULL;

-- name: analyze --
ANALYZE;

-- name: fired_lateness --
-- $1 fire reason text. Claim lateness (ms) of the fallbacks fired for that reason, from their fallback_fired event.
SELECT (e.detail->>'lateness_ms')::float8 AS ms FROM message_events e
WHERE e.kind = 'fallback_fired' AND e.detail->>'reason' = $1::text;

-- name: sms_lateness --
-- Seconds from due time to the SMS provider's acceptance being recorded (sms_sent event), per message.
SELECT extract(epoch FROM (e.at - (f.detail->>'due_at')::timestamptz))::float8 AS s
FROM message_events e JOIN message_events f ON f.message_id = e.message_id AND f.kind = 'fallback_fired'
WHERE e.kind = 'sms_sent';

-- name: fired_twice --
-- Messages with more than one fallback_fired event (must be none).
SELECT count(*) FROM (SELECT message_id FROM message_events WHERE kind = 'fallback_fired'
                      GROUP BY message_id HAVING count(*) > 1) d;

-- name: count_fallback --
-- $1 states text[]
SELECT count(*) FROM messages WHERE fallback_state = ANY($1::text[]);

-- name: receipt_latency --
-- $1 since unix time float8. Seconds from the provider's report Timestamp to its storage, per chat receipt.
SELECT extract(epoch FROM received_at)::float8 - (raw->>'Timestamp')::float8 / 1000 AS s
FROM receipts WHERE kind = 'chatapp' AND received_at >= to_timestamp($1::float8) AND raw ? 'Timestamp';

-- name: seed_sent --
-- $1 count int. Sent messages with a provider MessageId 'bench-<i>' and an armed timer an hour out.
INSERT INTO messages (channel, to_number, from_number, params, fallback_rule, fallback_duration_s, sms_text,
                      chat_state, fallback_state, due_at, provider_message_id, sent_at)
SELECT 'whatsapp', '65' || lpad(i::text, 8, '0'), '6580000000', '{"ChannelType":"whatsapp"}'::jsonb,
       'undelivered', 3600, 'sms ' || i, 'sent', 'armed', now() + interval '1 hour', 'bench-' || i, now()
FROM generate_series(0, $1 - 1) AS i
RETURNING id, provider_message_id;

-- name: copy_to_raw --
INSERT INTO raw_messages SELECT * FROM messages;

-- name: sent_per_second --
-- $1 from unix time, $2 to unix time: CAMS sends recorded per second (by sent_at).
SELECT floor(extract(epoch FROM sent_at))::bigint AS s, count(*)::int AS n FROM messages
WHERE sent_at >= to_timestamp($1::float8) AND sent_at < to_timestamp($2::float8) GROUP BY 1 ORDER BY 1;

-- name: count_chat --
-- $1 chat states text[]
SELECT count(*) FROM messages WHERE chat_state = ANY($1::text[]);

-- name: count_not_accepted --
SELECT count(*) FROM messages WHERE chat_state <> 'accepted';

-- name: now --
SELECT now();

-- name: drive_timers --
-- Every armed timer falls due now (time driven through the database, as the end-to-end tests do). Rows are
-- locked in id order first, the order every daemon write path locks in (lock_messages): an unordered bulk
-- UPDATE against the daemon's row locks deadlocked the replica scenario (DeadlockDetectedError).
WITH l AS (
    SELECT id FROM messages WHERE fallback_state = 'armed' AND due_at IS NOT NULL ORDER BY id FOR UPDATE
)
UPDATE messages m SET due_at = now() FROM l WHERE m.id = l.id AND m.fallback_state = 'armed';

-- name: pending_fallbacks --
-- $1 since timestamptz. Timers still armed and due, or fallbacks fired since $1 and not yet sent.
SELECT count(*) FROM messages
WHERE (fallback_state = 'armed' AND due_at IS NOT NULL AND due_at <= now())
   OR (fallback_state = 'firing' AND fired_at > $1);

-- name: seeded_lateness --
-- Claim lateness (s) of the timers the harness seeded (sent rows that never had a provider MessageId).
SELECT (e.detail->>'lateness_ms')::float8 / 1000 AS s FROM message_events e JOIN messages m ON m.id = e.message_id
WHERE e.kind = 'fallback_fired' AND m.provider_message_id IS NULL AND m.chat_state = 'sent';

-- name: count_applied_receipts --
SELECT count(*) FROM receipts WHERE applied_at IS NOT NULL;

-- name: sample_ids --
-- Up to 500 message ids from a 1% sample (arguments for EXPLAIN of the by-id queries).
SELECT id FROM messages TABLESAMPLE SYSTEM (1) LIMIT 500;

-- name: first_fired --
-- Unix time of the first fallback_fired event (the restart row: the first due timer fired), NULL before.
SELECT extract(epoch FROM min(at))::float8 FROM message_events WHERE kind = 'fallback_fired';

-- name: table_bytes --
-- $1 table names text[]: their total size on disk (heap, indexes, TOAST), in bytes.
SELECT coalesce(sum(pg_total_relation_size(t::regclass)), 0)::bigint FROM unnest($1::text[]) AS t;
