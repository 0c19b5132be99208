-- Queries of `fallback-daemon demo` (fallback_daemon/demo.py): its live view counts only the messages of its
-- own run, so a second demo on the same database does not summarise the first one too.

-- name: demo_counts --
-- $1 ids uuid[] (the messages this demo run submitted). Counts by state, double deliveries, and how many are
-- still in flight (being sent, firing, or armed with a timer).
SELECT chat_state, fallback_state, count(*)::int AS n,
       count(*) FILTER (WHERE double_delivered)::int AS double_delivered,
       count(*) FILTER (WHERE chat_state IN ('accepted', 'sending') OR fallback_state = 'firing'
                        OR (fallback_state = 'armed' AND due_at IS NOT NULL))::int AS pending
FROM messages WHERE id = ANY($1::uuid[])
GROUP BY chat_state, fallback_state;
