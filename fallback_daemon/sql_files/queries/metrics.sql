-- Queries behind the /metrics gauges that watch for work going stale (fallback_daemon/health.py).

-- name: metrics_overdue --
-- $1 overdue grace seconds float8, $2 SMS receipt wait seconds float8.
-- Armed timers past due by more than the grace (messages_due index), how late the most overdue one is, and
-- fallback SMS with no delivery report that long after they fired (messages_fired index, retention-bounded).
SELECT (SELECT count(*) FROM messages
        WHERE fallback_state = 'armed' AND due_at IS NOT NULL
          AND due_at < now() - $1 * interval '1 second')::int AS overdue_timers,
       coalesce((SELECT greatest(0, extract(epoch FROM now() - min(due_at)))::float8 FROM messages
                 WHERE fallback_state = 'armed' AND due_at IS NOT NULL), 0)::float8 AS oldest_overdue_s,
       (SELECT count(*) FROM messages
        WHERE fired_at IS NOT NULL AND fallback_state = 'sms_sent'
          AND fired_at < now() - $2 * interval '1 second')::int AS sms_without_receipt;
