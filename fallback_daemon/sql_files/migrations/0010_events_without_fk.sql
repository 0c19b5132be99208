-- 0010 (expand): message_events and webhook_sequences no longer carry a foreign key to messages.
--
-- Why: the key's check is a per-row trigger whose plan each connection caches. A connection that first checks
-- while `messages` is nearly empty (a new deployment, a table just truncated) caches a plan that reads the
-- whole table, and keeps it until `messages` is next analysed: every event insert then costs a scan of
-- `messages`. Measured (session 7, docs/performance.md): 500-message accepts grew from 25 ms to 190 ms within
-- six batches after 2,000 single accepts on a fresh database, and to seconds in the accept bench, where the
-- table grows by 110,000 rows before autovacuum analyses it; without the key they stay at 23-28 ms.
--
-- What the key guarded holds by construction: every event is written in the statement or transaction that
-- inserts or changes its message, with that message's row locked (insert, lock_messages ... FOR UPDATE, the
-- claims' FOR UPDATE SKIP LOCKED), and retention, which skips locked rows, now deletes a message's events and
-- webhook sequences in the statement that deletes the message (queries/retention.sql, purge_messages),
-- instead of ON DELETE CASCADE. A replica still on the previous retention query leaves its purged messages'
-- events behind (rows nothing reads) until `fallback-daemon` of this version runs; nothing fails.
ALTER TABLE message_events DROP CONSTRAINT IF EXISTS message_events_message_id_fkey;
ALTER TABLE webhook_sequences DROP CONSTRAINT IF EXISTS webhook_sequences_message_id_fkey;
