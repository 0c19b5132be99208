-- Sessions of the operator page /ui (fallback_daemon/web/ui.py, table ui_sessions of migration 0006).

-- name: ui_session_open --
-- $1 SHA-256 (hex) of the new session id, $2 API-token fingerprint, $3 lifetime in seconds float8.
INSERT INTO ui_sessions (id_hash, token_fp, expires_at)
VALUES ($1, $2, now() + $3::float8 * interval '1 second');

-- name: ui_session_valid --
-- $1 SHA-256 (hex) of the presented id, $2 fingerprint of the current API token. True when the session is
-- live: not revoked, not expired (on the database clock) and opened with the current token.
SELECT EXISTS (
    SELECT 1 FROM ui_sessions
    WHERE id_hash = $1 AND token_fp = $2 AND revoked_at IS NULL AND expires_at > now()
);

-- name: ui_session_revoke --
-- $1 SHA-256 (hex) of the id. Logout: the session stops working at once, on every replica.
UPDATE ui_sessions SET revoked_at = now() WHERE id_hash = $1 AND revoked_at IS NULL;

-- name: ui_sessions_purge --
-- Rows a day past their expiry or revocation; run at each login (a handful of rows per operator per day).
DELETE FROM ui_sessions
WHERE expires_at < now() - interval '1 day' OR revoked_at < now() - interval '1 day';
