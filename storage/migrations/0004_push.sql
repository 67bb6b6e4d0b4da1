-- Push notifications to offline devices: registered FCM tokens and a transactional outbox.
CREATE TABLE push_devices (
    token       text PRIMARY KEY,           -- an FCM registration token belongs to one app install
    user_id     text NOT NULL,
    platform    text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX push_devices_user ON push_devices (user_id);

CREATE TABLE push_outbox (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id          text NOT NULL,
    dedupe_key       text NOT NULL UNIQUE,  -- one push per (event, recipient), however often enqueued
    title            text NOT NULL,
    body             text NOT NULL,
    data             jsonb NOT NULL DEFAULT '{}',
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz
);
CREATE INDEX push_outbox_due ON push_outbox (next_attempt_at) WHERE state = 'pending';
