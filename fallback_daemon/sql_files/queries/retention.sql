-- Retention (fallback_daemon/retention.py): finished rows leave in small batches. Each statement takes at
-- most `batch` rows with FOR UPDATE SKIP LOCKED, so it never waits for (or blocks) a row a hot path holds,
-- and deletes them by primary key (one short transaction per batch).

-- name: purge_messages --
-- $1 retention window seconds float8, $2 batch int. Messages finished and untouched for the window: the chat
-- leg done (not accepted/sending/unknown) and the fallback leg done (never armed, cancelled, suppressed, SMS
-- settled) or armed without a timer (only a Failed receipt could still fire it, and one that late is not
-- acted on). Their events, webhook sequences and applied receipts are deleted in the same statement (there
-- is no foreign key to cascade: migration 0010).
-- Served by messages_created (oldest first); held, firing and timer-armed rows are never taken.
WITH old AS (
    SELECT id FROM messages
    WHERE created_at < now() - $1::float8 * interval '1 second'
      AND updated_at < now() - $1::float8 * interval '1 second'
      AND chat_state IN ('sent', 'delivered', 'read', 'failed', 'send_failed')
      AND (fallback_state IN ('none', 'cancelled', 'suppressed', 'sms_sent', 'sms_delivered', 'sms_failed')
           OR (fallback_state = 'armed' AND due_at IS NULL))
    ORDER BY created_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), receipts_gone AS (
    DELETE FROM receipts WHERE message_id = ANY(ARRAY(SELECT id FROM old))
), events_gone AS (
    DELETE FROM message_events WHERE message_id = ANY(ARRAY(SELECT id FROM old))
), sequences_gone AS (
    DELETE FROM webhook_sequences WHERE message_id = ANY(ARRAY(SELECT id FROM old))
)
DELETE FROM messages WHERE id = ANY(ARRAY(SELECT id FROM old))
RETURNING id;

-- name: purge_parked_receipts --
-- $1 retention window seconds float8, $2 batch int. Receipts that never matched a message (parked) within
-- the window. Served by the receipts_parked partial index.
WITH old AS (
    SELECT id FROM receipts
    WHERE applied_at IS NULL AND received_at < now() - $1::float8 * interval '1 second'
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM receipts WHERE id = ANY(ARRAY(SELECT id FROM old))
RETURNING id;

-- name: purge_dead_letters --
-- $1 retention window seconds float8, $2 batch int. Dead letters replayed longer ago than the window
-- (dead letters never replayed stay for an operator).
WITH old AS (
    SELECT id FROM dead_letters
    WHERE replayed_at < now() - $1::float8 * interval '1 second'
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM dead_letters WHERE id = ANY(ARRAY(SELECT id FROM old))
RETURNING id;

-- name: purge_budget_usage --
-- $1 retention window seconds float8, $2 batch int. SMS budget counters of days that ended longer ago than the
-- window (guards.sql counts today's day only; one row per budget per day would otherwise grow for ever).
WITH old AS (
    SELECT scope, key, day FROM sms_budget_usage
    WHERE day < (now() - $1::float8 * interval '1 second')::date - 1
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM sms_budget_usage u USING old
WHERE (u.scope, u.key, u.day) = (old.scope, old.key, old.day)
RETURNING u.day;
