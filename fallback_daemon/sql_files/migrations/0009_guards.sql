-- 0009 (expand): guards at the moment of fallback (docs/guards.md). Checked by the timer claim in the same
-- transaction as armed → firing, so replicas sharing the database cannot overspend a budget between them.

-- SMS budgets per day: one row per limit. scope global (key ''), prefix (key = dialing-code digits: every
-- budget whose prefix starts the number counts it), space (key = CustSpaceId). Set through the API / CLI, not
-- settings, so that every replica reads the same limits and a change needs no restart.
CREATE TABLE sms_budgets (
    scope        text NOT NULL,
    key          text NOT NULL,
    daily_limit  integer NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    updated_by   text,
    CONSTRAINT sms_budgets_pkey PRIMARY KEY (scope, key),
    CONSTRAINT sms_budgets_scope_valid CHECK (scope IN ('global', 'prefix', 'space')),
    CONSTRAINT sms_budgets_limit_valid CHECK (daily_limit >= 0),
    CONSTRAINT sms_budgets_global_key CHECK ((scope = 'global') = (key = ''))
);

-- What each budget spent on each day (the day in FALLBACK_BUDGET_TZ, read from the database clock). The claim
-- locks the rows it needs (in key order) before it decides, so two claimers never both take the last unit.
CREATE TABLE sms_budget_usage (
    scope  text NOT NULL,
    key    text NOT NULL,
    day    date NOT NULL,
    used   integer NOT NULL DEFAULT 0,
    CONSTRAINT sms_budget_usage_pkey PRIMARY KEY (scope, key, day)
);

-- Numbers (digits, no '+') that never get a fallback SMS: added by operators (API, CLI, import) or by an SMS
-- provider answer that means "opted out" (the trigger below).
CREATE TABLE sms_opt_outs (
    number      text NOT NULL,
    source      text NOT NULL,            -- api | import | provider
    reason      text,
    message_id  uuid,                     -- source provider: the fallback whose SMS answer said so
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sms_opt_outs_pkey PRIMARY KEY (number)
);
CREATE INDEX sms_opt_outs_created ON sms_opt_outs (created_at, number);

-- The send body's FallBackUrgent: lets the fallback through quiet hours (never through the other guards).
ALTER TABLE messages ADD COLUMN urgent boolean NOT NULL DEFAULT false;

-- An SMS answer classified as "opted out" (errorclasses.py; the loop writes error_class into the event) adds
-- the number in the same transaction as the event that records it.
CREATE FUNCTION record_provider_opt_out() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sms_opt_outs (number, source, reason, message_id)
    SELECT m.to_number, 'provider', left(coalesce(NEW.detail->>'error', NEW.detail->>'error_code'), 500), m.id
    FROM messages m WHERE m.id = NEW.message_id
    ON CONFLICT (number) DO NOTHING;
    RETURN NULL;
END;
$$;
CREATE TRIGGER message_events_opt_out AFTER INSERT ON message_events
    FOR EACH ROW WHEN (NEW.detail->>'error_class' = 'opted_out')
    EXECUTE FUNCTION record_provider_opt_out();
