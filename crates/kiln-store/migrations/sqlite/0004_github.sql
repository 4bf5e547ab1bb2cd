-- GitHub sign-in (SQLite): each user's GitHub access token, sealed by the server
-- (XChaCha20-Poly1305 under a key derived from the server secret, `v1:<base64>`), so that a
-- copy of the database alone gives no access to anyone's GitHub. One row per user: a new
-- sign-in replaces the token.
CREATE TABLE github_tokens (
    user_id      TEXT NOT NULL PRIMARY KEY REFERENCES users (user_id) ON DELETE CASCADE,
    sealed_token TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
