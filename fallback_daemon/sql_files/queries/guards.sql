-- Guards at the moment of fallback (fallback_daemon/guards.py, docs/guards.md).

-- name: lock_budget_usage --
-- $1 numbers text[], $2 CustSpaceIds text[], $3 day date. The budgets that count any of these fallbacks (global,
-- every prefix a number starts with, the spaces), each with today's usage row created at 0 if missing and
-- LOCKED: concurrent claimers queue on these rows (taken in key order, so they cannot deadlock), and whoever
-- holds them decides with the true count.
WITH b AS (
    SELECT scope, key, daily_limit FROM sms_budgets
    WHERE scope = 'global'
       OR (scope = 'space' AND key = ANY($2::text[]))
       OR (scope = 'prefix' AND EXISTS (SELECT 1 FROM unnest($1::text[]) AS n WHERE starts_with(n, key)))
), u AS (
    INSERT INTO sms_budget_usage (scope, key, day, used)
    SELECT scope, key, $3::date, 0 FROM b ORDER BY scope, key
    ON CONFLICT (scope, key, day) DO UPDATE SET used = sms_budget_usage.used  -- a no-op that locks the row
    RETURNING scope, key, used
)
SELECT b.scope, b.key, b.daily_limit, u.used FROM b JOIN u USING (scope, key) ORDER BY b.scope, b.key;

-- name: apply_guard_verdicts --
-- $1 ids uuid[], $2 actions text[] (fire | hold | drop | defer), $3 hold reasons text[], $4 defer until (unix
-- seconds) float8[], $5 event kinds text[], $6 event details jsonb[], $7 lease seconds float8, $8 budget scopes
-- text[], $9 budget keys text[], $10 units spent int[], $11 budget day date.
-- The guarded armed -> firing transition (rows locked by claim_due_fallbacks in this transaction), the budget
-- units it spends, and one timeline event per row. fire: firing (leased, attempt counter = fencing token);
-- hold: held with its hold_reason; drop: suppressed; defer: still armed, due when the quiet window opens.
-- Returns the rows that fired or were held, as claim_sms_retries does.
WITH v AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::float8[], $5::text[], $6::jsonb[])
           AS v(id, action, hold, until_s, kind, detail)
), spent AS (
    UPDATE sms_budget_usage u SET used = u.used + s.n
    FROM unnest($8::text[], $9::text[], $10::int[]) AS s(scope, key, n)
    WHERE u.scope = s.scope AND u.key = s.key AND u.day = $11::date
), done AS (
    UPDATE messages m
    SET fallback_state = CASE v.action WHEN 'fire' THEN 'firing' WHEN 'hold' THEN 'held'
                                       WHEN 'drop' THEN 'suppressed' ELSE 'armed' END,
        hold_reason = CASE WHEN v.action = 'hold' THEN v.hold END,
        fired_at = CASE v.action WHEN 'fire' THEN now() WHEN 'defer' THEN m.fired_at END,
        fire_reason = CASE WHEN v.action = 'fire' THEN coalesce(m.fire_reason, 'timeout')
                           WHEN v.hold = 'feed_down' THEN NULL
                           ELSE m.fire_reason END,
        fire_lease_until = CASE WHEN v.action = 'fire' THEN now() + $7 * interval '1 second' END,
        sms_attempts = m.sms_attempts + CASE WHEN v.action = 'fire' THEN 1 ELSE 0 END,
        sms_started_at = NULL,
        due_at = CASE v.action WHEN 'fire' THEN m.due_at WHEN 'defer' THEN to_timestamp(v.until_s) END,
        updated_at = now()
    FROM v
    -- `= ANY($1)` probes the primary key for exactly these ids (a bare join can become a sequential scan).
    WHERE m.id = v.id AND m.id = ANY($1::uuid[]) AND m.fallback_state = 'armed'
    RETURNING m.id, m.to_number, m.sms_text, m.fire_reason, m.fallback_state, m.hold_reason, m.channel,
              m.params->>'TemplateParams' AS template_params, m.due_at, m.sms_attempts, v.kind, v.detail,
              coalesce(extract(epoch FROM (now() - m.fired_at)), 0)::float8 AS firing_age_s,
              CASE WHEN v.action = 'fire' THEN extract(epoch FROM (clock_timestamp() - m.due_at))::float8
                   END AS lateness_s
), ev AS (
    INSERT INTO message_events (message_id, kind, detail)
    SELECT id, kind, detail || jsonb_build_object('due_at', due_at, 'lateness_ms', round(lateness_s * 1000))
    FROM done
)
SELECT id, to_number, sms_text, fire_reason, fallback_state, hold_reason, channel, template_params, lateness_s,
       sms_attempts, firing_age_s
FROM done WHERE fallback_state IN ('firing', 'held');

-- name: add_opt_outs --
-- $1 numbers text[] (normalised digits), $2 source text, $3 reason text. Returns how many were new.
WITH ins AS (
    INSERT INTO sms_opt_outs (number, source, reason)
    SELECT DISTINCT n, $2::text, $3::text FROM unnest($1::text[]) AS n
    ON CONFLICT (number) DO NOTHING
    RETURNING number
)
SELECT count(*)::int FROM ins;

-- name: remove_opt_out --
-- $1 number text
DELETE FROM sms_opt_outs WHERE number = $1 RETURNING number;

-- name: list_opt_outs --
-- $1 number prefix text (NULL: all), $2/$3 keyset cursor (created_at, number) of the last row seen (NULL: first
-- page), $4 limit int. Oldest first.
SELECT number, source, reason, message_id, created_at FROM sms_opt_outs
WHERE ($1::text IS NULL OR starts_with(number, $1::text))
  AND ($2::timestamptz IS NULL OR (created_at, number) > ($2::timestamptz, $3::text))
ORDER BY created_at, number
LIMIT $4;

-- name: set_budget --
-- $1 scope text, $2 key text, $3 daily limit int, $4 actor text, $5 budget time zone text. The budget as set,
-- with what it spent today.
WITH s AS (
    INSERT INTO sms_budgets (scope, key, daily_limit, updated_by) VALUES ($1, $2, $3, $4)
    ON CONFLICT (scope, key) DO UPDATE
    SET daily_limit = excluded.daily_limit, updated_by = excluded.updated_by, updated_at = now()
    RETURNING scope, key, daily_limit, updated_at, updated_by
)
SELECT s.*, coalesce((SELECT u.used FROM sms_budget_usage u
                      WHERE u.scope = s.scope AND u.key = s.key
                        AND u.day = (now() AT TIME ZONE $5::text)::date), 0) AS used_today
FROM s;

-- name: delete_budget --
-- $1 scope text, $2 key text
DELETE FROM sms_budgets WHERE scope = $1 AND key = $2 RETURNING scope;

-- name: list_budgets --
-- $1 budget time zone text. Every budget with what it spent today (the day in that zone).
SELECT b.scope, b.key, b.daily_limit, coalesce(u.used, 0) AS used_today, b.updated_at, b.updated_by
FROM sms_budgets b
LEFT JOIN sms_budget_usage u ON u.scope = b.scope AND u.key = b.key AND u.day = (now() AT TIME ZONE $1::text)::date
ORDER BY b.scope, b.key;

-- name: budget_day --
-- $1 budget time zone text
SELECT (now() AT TIME ZONE $1::text)::date;
