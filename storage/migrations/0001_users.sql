-- Accounts, refresh tokens and the data keys that encrypt personal fields.
CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL,
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('consumer', 'technician', 'merchant', 'admin')),
    name          text NOT NULL,
    phone_enc     bytea,                   -- storage.crypto envelope, never plaintext
    locale        text NOT NULL DEFAULT 'en',
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- Refresh tokens rotate: each use spends the token and issues the next one of the same family.
-- Presenting a spent token revokes the whole family.
CREATE TABLE refresh_tokens (
    token_hash  bytea PRIMARY KEY,         -- sha256 of the token; the token itself is never stored
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family      uuid NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);

-- AES-256 data keys, each wrapped (RSA-OAEP) by the key-encryption key named kek_id.
CREATE TABLE data_keys (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kek_id      text NOT NULL,
    wrapped     bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
