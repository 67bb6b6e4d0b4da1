-- Money and order audits (handlers.money.audits): each run, each anomaly once across runs (by its
-- fingerprint, so one found again is not new), and which anomalies each run found, with the evidence
-- as that run saw it.
CREATE TABLE audit_runs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at   timestamptz,
    trigger       text NOT NULL CHECK (trigger IN ('schedule', 'admin')),
    triggered_by  text,                         -- the admin's user id (trigger 'admin')
    stripe_checked boolean NOT NULL DEFAULT false,  -- whether the authorizations were checked at Stripe
    error         text                          -- why the run stopped short (its findings so far are kept)
);
CREATE INDEX audit_runs_schedule ON audit_runs (started_at) WHERE trigger = 'schedule';

CREATE TABLE audit_anomalies (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fingerprint    text NOT NULL UNIQUE,         -- kind:order:what (a job, an event, a transfer)
    kind           text NOT NULL,
    order_id       uuid,
    brand_id       text,
    first_seen_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    first_run      bigint NOT NULL REFERENCES audit_runs (id),
    last_run       bigint NOT NULL REFERENCES audit_runs (id)
);
CREATE INDEX audit_anomalies_order ON audit_anomalies (order_id);

CREATE TABLE audit_findings (
    run_id      bigint NOT NULL REFERENCES audit_runs (id),
    anomaly_id  bigint NOT NULL REFERENCES audit_anomalies (id),
    evidence    jsonb NOT NULL,
    PRIMARY KEY (run_id, anomaly_id)
);
