-- Names, e-mails, chat texts, push texts and attachments encrypted at rest (storage.crypto).
-- The plaintext columns stay, nullable, for rows written before this migration: new writes leave
-- them NULL, and storage.backfill moves old rows over in batches while the gateway serves.

-- The blind-index key (HMAC of e-mails, attachment contents) is one row wrapped like a data key.
ALTER TABLE data_keys ADD COLUMN purpose text NOT NULL DEFAULT 'data' CHECK (purpose IN ('data', 'index'));
CREATE UNIQUE INDEX data_keys_one_index_key ON data_keys (purpose) WHERE purpose = 'index';

ALTER TABLE users
    ALTER COLUMN email DROP NOT NULL,
    ALTER COLUMN name DROP NOT NULL,
    ADD COLUMN email_idx bytea,                -- HMAC-SHA256 of the normalized e-mail: login, uniqueness
    ADD COLUMN email_enc bytea,
    ADD COLUMN name_enc bytea;
CREATE UNIQUE INDEX users_email_idx ON users (email_idx);

ALTER TABLE chat_messages ADD COLUMN body_enc bytea;   -- bound to (order_id, seq)

ALTER TABLE push_outbox
    ALTER COLUMN title DROP NOT NULL,
    ALTER COLUMN body DROP NOT NULL,
    ADD COLUMN title_enc bytea,                -- bound to dedupe_key
    ADD COLUMN body_enc bytea;

-- sha256 now holds the keyed hash (HMAC-SHA256) of the content of sealed blobs.
ALTER TABLE attachments ADD COLUMN sealed boolean NOT NULL DEFAULT false;
