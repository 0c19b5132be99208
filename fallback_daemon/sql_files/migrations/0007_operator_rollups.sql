-- 0007 (expand): an index for the SMS-without-receipt gauge, and the per-minute rollup behind the operator
-- page's charts (issue 13). Plain CREATE INDEX (each migration runs in one transaction): it blocks writes to
-- messages while it builds; on a large table, build it CONCURRENTLY by hand first (IF NOT EXISTS skips it).

-- metrics_overdue's `fallback_sms_without_receipt` (fallback_state = 'sms_sent' AND fired_at < now() - 15 min)
-- reads this small partial index: a row leaves it as soon as its SMS report arrives.
CREATE INDEX IF NOT EXISTS messages_sms_sent ON messages (fired_at) WHERE fallback_state = 'sms_sent';

-- Time ranges of the timeline (the charts' roll-up reads a few minutes at a time). BRIN: events are appended
-- in `at` order, so a few pages of index cover the table, and the hot insert path pays almost nothing.
-- autosummarize: each filled block range is summarised by autovacuum soon after (an unsummarised range
-- matches every query, so without it a read of the last minutes would scan everything since the last VACUUM).
CREATE INDEX IF NOT EXISTS message_events_at_brin ON message_events USING brin (at) WITH (autosummarize = on);

-- Per-minute counts by channel and series (sent, delivered, read, failed, fired, sms_sent, sms_delivered,
-- sms_failed), written by GET /v1/stats/series for minutes that have closed (opstats.series); immutable once
-- written, kept for 2 days.
CREATE TABLE IF NOT EXISTS event_minutes (
    minute  timestamptz NOT NULL,
    channel text NOT NULL,
    series  text NOT NULL,
    n       bigint NOT NULL,
    PRIMARY KEY (minute, channel, series)
);

-- One row: every minute before rolled_through is in event_minutes (a minute without events has no rows).
CREATE TABLE IF NOT EXISTS event_minutes_progress (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    rolled_through timestamptz NOT NULL
);
INSERT INTO event_minutes_progress (rolled_through) VALUES ('-infinity') ON CONFLICT DO NOTHING;
