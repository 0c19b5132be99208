-- Duration advice (fallback_daemon/advice.py, GET /v1/stats/latency).

-- name: latency_samples --
-- $1 window seconds float8, $2 channel text (NULL: any), $3 To prefix text, digits only (NULL: any),
-- $4 limit int. The newest sent messages created in the window (messages_created, backwards) with their
-- times after acceptance: sent, first Delivered-or-Read and first Read ChatApp receipt as it arrived (one
-- probe of receipts_message each). `timed`: it had a timer fallback (SMS text, a rule with a timer, a
-- FallBackDuration).
SELECT m.channel, m.to_number, m.fallback_duration_s, m.double_delivered,
       (m.sms_text IS NOT NULL AND m.fallback_rule <> 'sentFailed' AND m.fallback_duration_s IS NOT NULL)
           AS timed,
       extract(epoch FROM m.sent_at - m.created_at)::float8 AS sent_s,
       extract(epoch FROM r.delivered_at - m.created_at)::float8 AS delivered_s,
       extract(epoch FROM r.read_at - m.created_at)::float8 AS read_s
FROM messages m
LEFT JOIN LATERAL (
    SELECT min(received_at) FILTER (WHERE status IN ('Delivered', 'Read')) AS delivered_at,
           min(received_at) FILTER (WHERE status = 'Read') AS read_at
    FROM receipts WHERE message_id = m.id AND kind = 'chatapp'
) r ON true
WHERE m.created_at >= now() - $1 * interval '1 second'
  AND m.sent_at IS NOT NULL
  AND ($2::text IS NULL OR m.channel = $2::text)
  AND ($3::text IS NULL OR left(m.to_number, length($3::text)) = $3::text)
ORDER BY m.created_at DESC
LIMIT $4;
