-- Every query the daemon runs, loaded by name (fallback_daemon/sql.py). Each block starts with
-- `-- name: <name> --`, then a comment listing the asyncpg parameters in order.

-- name: insert_messages --
-- $1 idempotency_key text[], $2 channel text[], $3 to text[], $4 from text[], $5 client_task_id text[],
-- $6 params text[] (JSON objects, cast to jsonb here: encoded by the caller, they spare the driver a
-- per-element container check of a jsonb[] of dicts), $7 rule text[], $8 duration_s int[], $9 sms_text text[],
-- $10 fallback_state text[],
-- $11 timer_s float8[] (NULL: no timer), $12 request_hash text[] (NULL: no key),
-- $13 notify channel text (NULL: no NOTIFY; else once, if a row was inserted),
-- $14 urgent bool[] (FallBackUrgent: the fallback ignores quiet hours; guards.py)
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::int[], $9::text[], $10::text[], $11::float8[], $12::text[], $14::bool[])
           AS t(idempotency_key, channel, to_number, from_number, client_task_id, params, rule, duration_s,
                sms_text, fallback_state, timer_s, request_hash, urgent)
), ins AS (
    INSERT INTO messages (idempotency_key, channel, to_number, from_number, client_task_id, params,
                          fallback_rule, fallback_duration_s, sms_text, fallback_state, due_at, request_hash,
                          urgent)
    SELECT idempotency_key, channel, to_number, from_number, client_task_id, params::jsonb, rule, duration_s,
           sms_text, fallback_state,
           CASE WHEN timer_s IS NULL OR fallback_state <> 'armed' THEN NULL
                ELSE now() + timer_s * interval '1 second' END,
           request_hash, coalesce(urgent, false)
    FROM input
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, idempotency_key, chat_state, fallback_state, due_at, request_hash
), ev AS (
    INSERT INTO message_events (message_id, kind, detail)
    SELECT id, 'accepted', jsonb_build_object('fallback_state', fallback_state, 'due_at', due_at) FROM ins
)
-- The uncorrelated sub-select runs once, on the first row: one statement and one round trip per accept.
SELECT id, idempotency_key, chat_state, fallback_state, request_hash,
       (SELECT pg_notify($13::text, '') WHERE $13::text IS NOT NULL) AS notified
FROM ins;

-- name: messages_by_idempotency_keys --
-- $1 keys text[]. The rows keys already name (a replay answers with the current state), with the digest of
-- the request each key was first used with.
SELECT id, idempotency_key, chat_state, fallback_state, request_hash
FROM messages WHERE idempotency_key = ANY($1::text[]);

-- name: claim_sends --
-- $1 limit int, $2 lease seconds float8
WITH c AS (
    SELECT id FROM messages
    WHERE chat_state = 'accepted' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE messages m
SET chat_state = 'sending', send_attempts = m.send_attempts + 1, send_started_at = NULL,
    send_lease_until = now() + $2 * interval '1 second', updated_at = now()
FROM c WHERE m.id = c.id AND m.id = ANY(ARRAY(SELECT id FROM c))  -- a primary-key probe, never a table scan
RETURNING m.id, m.params, m.send_attempts, m.to_number, m.channel;

-- name: mark_send_started --
-- $1 id uuid, $2 send_attempts int (the claim's fencing token). Committed just before the request is written:
-- from here on the send may reach CAMS. No row back = the claim was lost (lease swept): do not send.
UPDATE messages SET send_started_at = now()
WHERE id = $1 AND chat_state = 'sending' AND send_attempts = $2 AND send_lease_until > now()
RETURNING id;

-- name: mark_sends_started --
-- $1 ids uuid[], $2 send_attempts int[] (fencing tokens). mark_send_started for a whole claim in one round trip,
-- written before the batch reserves its send slots (so the write never makes a call miss its slot). Locks in
-- id order, like every bulk write. Returns the ids marked.
WITH l AS (
    SELECT m.id FROM messages m JOIN unnest($1::uuid[], $2::int[]) AS u(id, attempt) ON m.id = u.id
    WHERE m.chat_state = 'sending' AND m.send_attempts = u.attempt AND m.send_lease_until > now()
    ORDER BY m.id FOR UPDATE OF m
)
UPDATE messages m SET send_started_at = now() FROM l WHERE m.id = l.id
RETURNING m.id;

-- name: retry_send --
-- $1 id uuid, $2 delay seconds float8, $3 error text, $4 send_attempts int (fencing token; NULL: any)
WITH u AS (
    UPDATE messages SET chat_state = 'accepted', next_attempt_at = now() + $2 * interval '1 second',
                        last_error = $3, send_lease_until = NULL, send_started_at = NULL, updated_at = now()
    WHERE id = $1 AND chat_state = 'sending' AND ($4::int IS NULL OR send_attempts = $4::int)
    RETURNING id, send_attempts, next_attempt_at
)
INSERT INTO message_events (message_id, kind, detail)
SELECT id, 'send_retry', jsonb_build_object('error', $3::text, 'attempt', send_attempts, 'next_attempt_at', next_attempt_at)
FROM u;

-- name: stale_sends --
-- $1 limit int. Messages whose send lease ran out (a replica died or lost the database mid-send). Those never
-- marked in flight are sent again; only a marked one may have reached CAMS (it goes to `unknown` + reconcile).
SELECT id, send_started_at IS NOT NULL AS started FROM messages
WHERE chat_state = 'sending' AND send_lease_until < now()
ORDER BY send_lease_until LIMIT $1 FOR UPDATE SKIP LOCKED;

-- name: lock_messages --
-- $1 ids uuid[], $2 provider message ids text[], $3 provider ids to take the provider-id advisory locks on
-- first (NULL or empty: none; a send result recording its MessageId passes it). Locks in id order so
-- concurrent batches cannot deadlock. The advisory locks are an InitPlan, taken before any row is locked.
WITH locks AS (
    SELECT count(pg_advisory_xact_lock(h)) AS n
    FROM (SELECT DISTINCT hashtextextended(p, 0) AS h FROM unnest(coalesce($3::text[], '{}')) AS p ORDER BY 1) AS s
)
SELECT id, chat_state, fallback_state, fallback_rule, double_delivered, provider_message_id, channel
FROM messages
WHERE (id = ANY($1::uuid[]) OR provider_message_id = ANY($2::text[])) AND (SELECT n FROM locks) IS NOT NULL
ORDER BY id
FOR UPDATE OF messages;

-- name: write_outcomes --
-- The write half of `Outcomes._write` in one statement (one round trip): update_messages' $1-$10, then
-- $11 event message_id uuid[], $12 kind text[], $13 detail jsonb[] (insert_events), $14 receipt id bigint[],
-- $15 its message id uuid[] (mark_receipts_applied), $16 notify channel text (NULL: no NOTIFY).
-- The three writes touch different tables, so that they cannot see one another's effects in one statement
-- does not matter; the AFTER triggers on message_events (webhooks outbox, opt-outs) fire at the end of the
-- statement and see the updated messages rows, as they did when these were three statements.
WITH upd AS (
    UPDATE messages m
    SET chat_state = u.chat,
        fallback_state = u.fallback,
        due_at = CASE WHEN u.fire IS NOT NULL THEN now()
                      WHEN u.fallback <> 'armed' THEN NULL
                      ELSE m.due_at END,
        fire_reason = coalesce(u.fire, m.fire_reason),
        double_delivered = CASE WHEN u.fallback = 'cancelled' THEN false ELSE m.double_delivered OR u.dbl END,
        provider_message_id = coalesce(u.pid, m.provider_message_id),
        sms_provider_id = coalesce(u.spid, m.sms_provider_id),
        sent_at = CASE WHEN u.pid IS NOT NULL THEN coalesce(m.sent_at, now()) ELSE m.sent_at END,
        last_error = coalesce(u.err, m.last_error),
        hold_reason = CASE WHEN u.fallback = 'held' THEN coalesce(u.hold, m.hold_reason) ELSE NULL END,
        send_lease_until = CASE WHEN u.chat = 'sending' THEN m.send_lease_until ELSE NULL END,
        send_started_at = CASE WHEN u.chat IN ('sending', 'unknown') THEN m.send_started_at ELSE NULL END,
        reconcile_at = CASE WHEN u.chat <> 'unknown' THEN NULL
                            WHEN m.chat_state <> 'unknown'
                                THEN coalesce(m.send_started_at, now()) + $10::float8 * interval '1 second'
                            ELSE m.reconcile_at END,
        reconcile_attempts = CASE WHEN u.chat = 'unknown' THEN m.reconcile_attempts ELSE 0 END,
        fire_lease_until = CASE WHEN u.fallback = 'firing' THEN m.fire_lease_until ELSE NULL END,
        sms_started_at = CASE WHEN u.fallback = 'firing' THEN m.sms_started_at ELSE NULL END,
        updated_at = now()
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::text[], $7::text[], $8::text[],
                $9::text[])
         AS u(id, chat, fallback, fire, dbl, pid, err, hold, spid)
    WHERE m.id = u.id
    RETURNING m.id
), ev AS (
    INSERT INTO message_events (message_id, kind, detail)
    SELECT * FROM unnest($11::uuid[], $12::text[], $13::jsonb[])
    RETURNING id
), applied AS (
    UPDATE receipts r SET message_id = x.mid, applied_at = now()
    FROM unnest($14::bigint[], $15::uuid[]) AS x(id, mid)
    WHERE r.id = x.id
    RETURNING r.id
)
SELECT (SELECT count(*) FROM upd)::int AS updated, (SELECT count(*) FROM ev)::int AS events,
       (SELECT count(*) FROM applied)::int AS applied,
       (SELECT pg_notify($16::text, '') WHERE $16::text IS NOT NULL) AS notified;

-- name: insert_events --
-- $1 message_id uuid[], $2 kind text[], $3 detail jsonb[]
INSERT INTO message_events (message_id, kind, detail)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[]);

-- name: insert_receipts --
-- $1 kind text, $2 source text, $3 provider_id text[], $4 status text[], $5 task_id text[], $6 raw jsonb[],
-- $7 lock bool: take the provider-id advisory locks on $3 first (chat receipts; an InitPlan, so they are
-- held before the first row is inserted: one round trip instead of two).
-- Returns only the receipts not seen before (the dedupe key is (kind, provider_id, status)).
WITH locks AS (
    SELECT count(pg_advisory_xact_lock(h)) AS n
    FROM (SELECT DISTINCT hashtextextended(p, 0) AS h FROM unnest($3::text[]) AS p WHERE $7::bool ORDER BY 1) AS s
)
INSERT INTO receipts (kind, source, provider_id, status, task_id, raw)
SELECT $1, $2, p, s, t, r FROM unnest($3::text[], $4::text[], $5::text[], $6::jsonb[]) AS u(p, s, t, r)
WHERE (SELECT n FROM locks) IS NOT NULL
ORDER BY p, s
ON CONFLICT ON CONSTRAINT receipts_dedupe DO NOTHING
RETURNING id, provider_id, status, task_id;

-- name: lock_parked_receipts --
-- $1 provider message ids text[]. Receipts that arrived before we knew which message they belong to.
SELECT id, provider_id, status FROM receipts
WHERE kind = 'chatapp' AND provider_id = ANY($1::text[]) AND applied_at IS NULL
ORDER BY id FOR UPDATE;

-- name: claim_due_fallbacks --
-- $1 limit int, $2 budget time zone text. Locks due armed fallbacks (FOR UPDATE SKIP LOCKED, earliest due first)
-- with what the guards look at; the caller (guards.GuardStore.claim_due) decides and writes the at-most-once
-- armed -> firing transition (apply_guard_verdicts) in the same transaction. Also returns the database clock and
-- today's budget day in that zone, and whether any budget exists (a budget set while this statement runs
-- counts from the next claim on).
WITH due AS (
    SELECT id, channel, to_number, fire_reason, urgent, due_at, last_error, params->>'CustSpaceId' AS space
    FROM messages
    WHERE fallback_state = 'armed' AND due_at <= now()
      -- policy.is_success: a satisfied rule never fires (unreachable while receipts cancel, checked anyway)
      AND NOT (chat_state = 'read' OR (chat_state = 'delivered' AND fallback_rule <> 'unread'))
    ORDER BY due_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
SELECT due.id, due.channel, due.to_number, due.fire_reason, due.urgent, due.space, due.last_error,
       (g.channel IS NOT NULL) AS gated,
       EXISTS (SELECT 1 FROM sms_opt_outs o WHERE o.number = due.to_number) AS opted_out,
       -- the Failed receipt's ErrorCode (errorclasses.py), read only for receipt-triggered fallbacks
       CASE WHEN due.fire_reason = 'failed_receipt' THEN
           (SELECT r.raw->>'ErrorCode' FROM receipts r
            WHERE r.message_id = due.id AND r.kind = 'chatapp' AND r.status = 'Failed'
            ORDER BY r.id DESC LIMIT 1) END AS receipt_error,
       extract(epoch FROM now())::float8 AS now,
       (now() AT TIME ZONE $2::text)::date AS budget_day,
       -- whether any SMS budget exists: without one the claim skips lock_budget_usage (one round trip)
       EXISTS (SELECT 1 FROM sms_budgets) AS budgeted
FROM due LEFT JOIN feed_health g ON g.channel = due.channel AND g.gate_closed
ORDER BY due.due_at, due.id;

-- name: next_due_in --
-- Seconds until the next armed fallback is due or the next SMS retry comes up (NULL: none). Served by the
-- messages_due and messages_firing partial indexes.
SELECT extract(epoch FROM (least(
    (SELECT min(due_at) FROM messages WHERE fallback_state = 'armed' AND due_at IS NOT NULL),
    (SELECT min(fire_lease_until) FROM messages WHERE fallback_state = 'firing' AND sms_started_at IS NULL)
) - now()))::float8 AS seconds;

-- name: mark_sms_started --
-- $1 id uuid, $2 sms_attempts int (fencing token). Committed just before the SMS request is written.
UPDATE messages SET sms_started_at = now()
WHERE id = $1 AND fallback_state = 'firing' AND sms_attempts = $2 AND sms_started_at IS NULL
  AND fire_lease_until > now()
  -- policy.is_success: a chat success that arrived since the firing (say, during a provider outage) means
  -- the SMS is not needed any more; the loop then records SmsNotNeeded instead of sending.
  AND NOT (chat_state = 'read' OR (chat_state = 'delivered' AND fallback_rule <> 'unread'))
RETURNING id;

-- name: mark_sms_batch_started --
-- $1 ids uuid[], $2 sms_attempts int[] (fencing tokens). mark_sms_started for a whole timer claim in one round
-- trip (the fresh firings of one claim_due pass), same conditions; locks in id order. Returns the ids marked.
WITH l AS (
    SELECT m.id FROM messages m JOIN unnest($1::uuid[], $2::int[]) AS u(id, attempt) ON m.id = u.id
    WHERE m.fallback_state = 'firing' AND m.sms_attempts = u.attempt AND m.sms_started_at IS NULL
      AND m.fire_lease_until > now()
      AND NOT (m.chat_state = 'read' OR (m.chat_state = 'delivered' AND m.fallback_rule <> 'unread'))
    ORDER BY m.id FOR UPDATE OF m
)
UPDATE messages m SET sms_started_at = now() FROM l WHERE m.id = l.id
RETURNING m.id;

-- name: lock_unstarted_firing --
-- $1 id uuid, $2 sms_attempts int. The firing row as lock_messages returns it, if this attempt still owns it
-- and its SMS is not in flight.
SELECT id, chat_state, fallback_state, fallback_rule, double_delivered, provider_message_id, channel
FROM messages
WHERE id = $1 AND fallback_state = 'firing' AND sms_attempts = $2 AND sms_started_at IS NULL
FOR UPDATE;

-- name: retry_sms --
-- $1 id uuid, $2 sms_attempts int (fencing token), $3 delay seconds float8, $4 error text, $5 provider text.
-- The SMS request provably did not get through (refused connection, throttled, 5xx): stay `firing`, not in
-- flight, with the lease ending at the next attempt (claim_sms_retries picks it up then).
WITH u AS (
    UPDATE messages SET sms_started_at = NULL, fire_lease_until = now() + $3 * interval '1 second',
                        sms_last_error = $4, updated_at = now()
    WHERE id = $1 AND fallback_state = 'firing' AND sms_attempts = $2
    RETURNING id, sms_attempts, fire_lease_until
)
INSERT INTO message_events (message_id, kind, detail)
SELECT id, 'sms_retry', jsonb_build_object('error', $4::text, 'attempt', sms_attempts,
                                           'next_attempt_at', fire_lease_until, 'provider', $5::text)
FROM u;

-- name: claim_sms_retries --
-- $1 limit int, $2 lease seconds float8. Firing fallbacks whose SMS is not in flight and whose lease ended: a
-- scheduled retry, or a claim that died before writing its request. Either way nothing went out: send again.
WITH c AS (
    SELECT id FROM messages
    WHERE fallback_state = 'firing' AND fire_lease_until <= now() AND sms_started_at IS NULL
    ORDER BY fire_lease_until
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE messages m
SET fire_lease_until = now() + $2 * interval '1 second', sms_attempts = m.sms_attempts + 1, updated_at = now()
FROM c WHERE m.id = c.id AND m.id = ANY(ARRAY(SELECT id FROM c))
RETURNING m.id, m.to_number, m.sms_text, m.fire_reason, m.fallback_state, m.hold_reason, m.channel,
          m.params->>'TemplateParams' AS template_params, NULL::float8 AS lateness_s, m.sms_attempts,
          coalesce(extract(epoch FROM (now() - m.fired_at)), 0)::float8 AS firing_age_s;

-- name: claim_stale_firings --
-- $1 limit int, $2 lease seconds float8. Fallbacks whose SMS request was written (in flight) but whose outcome
-- was never recorded before the lease ran out. Re-leased for the reconciling replica (no second reconciler).
WITH c AS (
    SELECT id FROM messages
    WHERE fallback_state = 'firing' AND fire_lease_until < now() AND sms_started_at IS NOT NULL
    ORDER BY fire_lease_until LIMIT $1 FOR UPDATE SKIP LOCKED
)
UPDATE messages m SET fire_lease_until = now() + $2 * interval '1 second'
FROM c WHERE m.id = c.id AND m.id = ANY(ARRAY(SELECT id FROM c))
RETURNING m.id, m.to_number, m.channel, m.sms_started_at, m.sms_attempts;

-- name: sms_absent --
-- $1 id uuid, $2 sms_attempts int, $3 detail text. The SMS provider proves the in-flight SMS never arrived:
-- clear the mark and make the retry due now.
WITH u AS (
    UPDATE messages SET sms_started_at = NULL, fire_lease_until = now(), updated_at = now()
    WHERE id = $1 AND fallback_state = 'firing' AND sms_attempts = $2 AND sms_started_at IS NOT NULL
    RETURNING id
)
INSERT INTO message_events (message_id, kind, detail)
SELECT id, 'sms_reconciled_absent', jsonb_build_object('detail', $3::text) FROM u;

-- name: claim_reconcile --
-- $1 limit int, $2 lease seconds float8. Ambiguous chat sends whose next provider lookup is due; the lookup
-- time moves out by the lease so that no other replica looks them up at the same time.
WITH c AS (
    SELECT id FROM messages
    WHERE chat_state = 'unknown' AND reconcile_at <= now()
    ORDER BY reconcile_at LIMIT $1 FOR UPDATE SKIP LOCKED
)
UPDATE messages m SET reconcile_at = now() + $2 * interval '1 second', reconcile_attempts = m.reconcile_attempts + 1
FROM c WHERE m.id = c.id AND m.id = ANY(ARRAY(SELECT id FROM c))
RETURNING m.id, m.params, m.send_started_at, m.created_at, m.reconcile_attempts;

-- name: reconcile_later --
-- $1 id uuid, $2 delay seconds float8 (NULL: give up, stay `unknown` for an operator), $3 detail text
WITH u AS (
    UPDATE messages SET reconcile_at = CASE WHEN $2::float8 IS NULL THEN NULL
                                            ELSE now() + $2::float8 * interval '1 second' END
    WHERE id = $1 AND chat_state = 'unknown'
    RETURNING id, reconcile_attempts
)
INSERT INTO message_events (message_id, kind, detail)
SELECT id, CASE WHEN $2::float8 IS NULL THEN 'reconcile_gave_up' ELSE 'reconcile_undecided' END,
       jsonb_build_object('detail', $3::text, 'attempt', reconcile_attempts)
FROM u;

-- name: renew_firing --
-- $1 id uuid, $2 lease seconds float8. Returns what is needed to (re)send the SMS.
UPDATE messages
SET fire_lease_until = now() + $2 * interval '1 second', sms_attempts = sms_attempts + 1, sms_started_at = NULL,
    updated_at = now()
WHERE id = $1 AND fallback_state = 'firing'
RETURNING id, to_number, sms_text, fire_reason, fallback_state, hold_reason, channel,
          params->>'TemplateParams' AS template_params, NULL::float8 AS lateness_s, sms_attempts,
          coalesce(extract(epoch FROM (now() - fired_at)), 0)::float8 AS firing_age_s;

-- name: reserve_send_slots --
-- $1 name text, $2 spacing seconds float8 (1/pace), $3 count int. Reserves `count` consecutive send slots $2
-- apart, from the later of the row's next free slot (kept in updated_at) and now; returns the first slot and
-- the database clock, both as unix times. SET and RETURNING run after the row lock is held, so a waiting
-- replica sees the latest next-free slot and a clock reading taken just before the answer leaves.
-- The very first call creates the row and returns nothing.
WITH ins AS (
    INSERT INTO rate_limits (name, tokens, updated_at) VALUES ($1, 0, clock_timestamp())
    ON CONFLICT (name) DO NOTHING
)
UPDATE rate_limits
SET updated_at = greatest(updated_at, clock_timestamp()) + $3::int * $2::float8 * interval '1 second'
WHERE name = $1
RETURNING extract(epoch FROM updated_at)::float8 - $3::int * $2::float8 AS first,
          extract(epoch FROM clock_timestamp())::float8 AS now;

-- name: get_message --
-- $1 id uuid
SELECT * FROM messages WHERE id = $1;

-- name: get_events --
-- $1 message id uuid
SELECT at, kind, detail FROM message_events WHERE message_id = $1 ORDER BY id;

-- name: count_by_state --
SELECT chat_state, fallback_state, count(*)::int AS n, count(*) FILTER (WHERE double_delivered)::int AS double_delivered
FROM messages GROUP BY chat_state, fallback_state;

-- name: ping --
SELECT 1;

-- name: flush_feed_health --
-- $1 channel text[], $2 last receipt unix time float8[]. Every replica flushes what it saw every few seconds.
INSERT INTO feed_health (channel, last_receipt_at)
SELECT c, to_timestamp(t) FROM unnest($1::text[], $2::float8[]) AS u(c, t)
ON CONFLICT (channel) DO UPDATE
SET last_receipt_at = greatest(feed_health.last_receipt_at, excluded.last_receipt_at);

-- name: feed_status --
-- $1 channels text[]. Per channel: last receipt, gate state, and the earliest send with no receipt since.
SELECT c.channel,
       extract(epoch FROM f.last_receipt_at)::float8 AS last_receipt,
       coalesce(f.gate_closed, false) AS gate_closed,
       (SELECT extract(epoch FROM min(m.sent_at))::float8 FROM messages m
        WHERE m.channel = c.channel AND m.sent_at IS NOT NULL
          AND m.sent_at > coalesce(f.last_receipt_at, '-infinity'::timestamptz)) AS earliest_unanswered,
       extract(epoch FROM now())::float8 AS now
FROM unnest($1::text[]) AS c(channel) LEFT JOIN feed_health f USING (channel);

-- name: set_feed_gate --
-- $1 channel text, $2 closed bool
INSERT INTO feed_health (channel, gate_closed, changed_at) VALUES ($1, $2, now())
ON CONFLICT (channel) DO UPDATE SET gate_closed = excluded.gate_closed, changed_at = now()
WHERE feed_health.gate_closed IS DISTINCT FROM excluded.gate_closed;

-- name: gauge_counts --
-- Cheap counts for /metrics, each served by a partial index.
SELECT (SELECT count(*) FROM messages WHERE fallback_state = 'armed' AND due_at IS NOT NULL)::int AS pending_timers,
       (SELECT count(*) FROM messages WHERE fallback_state = 'held')::int AS held;

-- name: recent_counts_by_state --
-- $1 window seconds float8. Counts by state of messages accepted within the window.
SELECT chat_state, fallback_state, count(*)::int AS n FROM messages
WHERE created_at > now() - $1 * interval '1 second'
GROUP BY chat_state, fallback_state;

-- name: reconcile_context --
-- $1 id uuid, $2 since timestamptz. For a lookup by (To, time window) without TaskId: the MessageIds already known
-- to belong to our OTHER messages to the same number (they cannot be this send), and how many other sends to that
-- number in the window are themselves without a MessageId (then one list row could be either: undecidable).
SELECT coalesce(array_agg(o.provider_message_id) FILTER (WHERE o.provider_message_id IS NOT NULL), '{}') AS known,
       count(*) FILTER (WHERE o.provider_message_id IS NULL AND o.send_started_at IS NOT NULL) AS ambiguous_peers
FROM messages m JOIN messages o ON o.to_number = m.to_number AND o.id <> m.id
WHERE m.id = $1 AND o.created_at >= $2::timestamptz - interval '1 day'
  AND (o.sent_at IS NULL OR o.sent_at >= $2::timestamptz)
  AND (o.send_started_at IS NULL OR o.send_started_at >= $2::timestamptz);
