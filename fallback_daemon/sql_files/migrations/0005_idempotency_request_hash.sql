-- 0005 (expand): the digest of the request body an Idempotency-Key was first used with. A later request with the
-- same key and another body is refused (422) instead of silently answering with the first message (Stripe's
-- rule). NULL: accepted without a key. Keys themselves are stored scoped to their endpoint ("single:<key>",
-- "batch:<key>:<i>", web/api.py), so a batch item can never collide with a single send.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS request_hash text;
