-- 0003 (expand): indexes behind the operator API's search and stats, and who replayed a dead letter.
-- Plain CREATE INDEX (each migration runs in one transaction, so not CONCURRENTLY): it blocks writes to
-- the table while it builds; on a large live table, build these by hand CONCURRENTLY first (IF NOT EXISTS
-- then makes this migration a no-op).

-- Search by the client's own TaskId (GET /v1/messages?task_id=), newest first.
CREATE INDEX IF NOT EXISTS messages_client_task_id ON messages (client_task_id, created_at)
    WHERE client_task_id IS NOT NULL;
-- "Fallbacks fired in the last hour, by reason": a row enters once, when it fires.
CREATE INDEX IF NOT EXISTS messages_fired ON messages (fired_at) WHERE fired_at IS NOT NULL;
-- Held fallbacks by reason and channel (stats, POST /v1/held/release|drop); rows leave it when released.
CREATE INDEX IF NOT EXISTS messages_held ON messages (hold_reason, channel) WHERE fallback_state = 'held';
-- Sends whose outcome is unknown (stats "why is nothing being sent?", re-drive candidates).
CREATE INDEX IF NOT EXISTS messages_unknown ON messages (updated_at) WHERE chat_state = 'unknown';
-- Receipt feed windows (lag, last receipt per source): BRIN, since receipts are appended in time order and
-- a B-tree on this insert-heavy table would cost every receipt write.
CREATE INDEX IF NOT EXISTS receipts_received_brin ON receipts USING brin (received_at);

ALTER TABLE dead_letters
    ADD COLUMN IF NOT EXISTS replayed_by text,
    ADD COLUMN IF NOT EXISTS replay_reason text;
