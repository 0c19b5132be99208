-- Queue ingestion: dead letters.

-- name: insert_dead_letters --
-- $1 source text, $2 queue text, $3 kind text, $4 queue_message_id text[], $5 body text[], $6 error text[]
INSERT INTO dead_letters (source, queue, kind, queue_message_id, body, error)
SELECT $1, $2, $3, m, b, e FROM unnest($4::text[], $5::text[], $6::text[]) AS u(m, b, e);
