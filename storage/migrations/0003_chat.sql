-- One chat room per order: a gap-free sequence of messages, read positions per member.
CREATE TABLE chat_rooms (
    order_id  uuid PRIMARY KEY REFERENCES orders (id),
    last_seq  bigint NOT NULL DEFAULT 0        -- the row lock serializes senders: no gaps, no reuse
);

CREATE TABLE chat_messages (
    order_id       uuid NOT NULL REFERENCES orders (id),
    seq            bigint NOT NULL,
    sender_id      text NOT NULL,
    sender_role    text NOT NULL,
    client_id      text,                       -- the sender's id for the message: retries are idempotent
    kind           text NOT NULL CHECK (kind IN ('text', 'system')),
    body           text,                       -- text messages
    attachments    uuid[] NOT NULL DEFAULT '{}',
    system_code    text,                       -- system messages: rendered in each reader's language
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, seq)
);
CREATE UNIQUE INDEX chat_messages_client ON chat_messages (order_id, sender_id, client_id)
    WHERE client_id IS NOT NULL;

CREATE TABLE chat_reads (
    order_id  uuid NOT NULL REFERENCES orders (id),
    user_id   text NOT NULL,
    read_seq  bigint NOT NULL,
    PRIMARY KEY (order_id, user_id)
);
