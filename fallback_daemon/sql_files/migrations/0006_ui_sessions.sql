-- 0006 (expand): server-side sessions of the operator page /ui (web/ui.py). The browser's cookie holds a random
-- id; only its SHA-256 is stored here, so reading this table yields no usable cookie. A session ends at
-- expires_at (FALLBACK_UI_SESSION_TTL_S after login) or when revoked (logout). token_fp is a digest of the
-- API token the session was opened with: rotating FALLBACK_API_TOKEN ends every session. Sessions are shared
-- by all replicas and survive restarts; rows a day past their end are deleted at each login.
CREATE TABLE IF NOT EXISTS ui_sessions (
    id_hash text PRIMARY KEY,
    token_fp text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX IF NOT EXISTS ui_sessions_expires ON ui_sessions (expires_at);
