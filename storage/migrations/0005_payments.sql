-- Stripe: consumers pay for orders, technicians are paid out through Connect.
-- Stripe is the source of truth for money; these tables record what it told us and what we asked of it.

-- An order that must be paid waits in 'awaiting_payment' until Stripe says it is paid (or authorized).
ALTER TABLE orders DROP CONSTRAINT orders_state_check;
ALTER TABLE orders ADD CONSTRAINT orders_state_check
    CHECK (state IN ('awaiting_payment', 'open', 'accepted', 'en_route', 'in_service', 'completed', 'cancelled'));
-- NULL: the order needs no payment (the gateway ran without Stripe when it was created).
ALTER TABLE orders ADD COLUMN payment_state text
    CHECK (payment_state IN ('unpaid', 'processing', 'authorized', 'paid', 'failed', 'canceled', 'refunded',
                             'partially_refunded'));

-- A consumer's Stripe customer (keyed like every other table by the session's user id).
CREATE TABLE stripe_customers (
    user_id      text PRIMARY KEY,
    customer_id  text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- One PaymentIntent per order (payment.pay creates it once; Stripe's idempotency key makes a race one intent).
CREATE TABLE payments (
    order_id         uuid PRIMARY KEY REFERENCES orders (id),
    intent_id        text NOT NULL UNIQUE,
    policy           text NOT NULL CHECK (policy IN ('pay_at_creation', 'capture_at_completion')),
    amount_cents     integer NOT NULL,
    currency         text NOT NULL,
    charge_id        text,
    captured_cents   integer NOT NULL DEFAULT 0,
    refunded_cents   integer NOT NULL DEFAULT 0,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Every verified event, stored before it is applied; applied_at makes applying it happen once.
CREATE TABLE stripe_events (
    id           text PRIMARY KEY,
    type         text NOT NULL,
    created      timestamptz NOT NULL,   -- when Stripe created the event
    source       text NOT NULL CHECK (source IN ('webhook', 'reconcile')),
    payload      jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    applied_at   timestamptz
);
CREATE INDEX stripe_events_unapplied ON stripe_events (received_at) WHERE applied_at IS NULL;

-- A technician's Express connected account.
CREATE TABLE payout_accounts (
    user_id            text PRIMARY KEY,
    account_id         text NOT NULL UNIQUE,
    payouts_enabled    boolean NOT NULL DEFAULT false,
    details_submitted  boolean NOT NULL DEFAULT false,
    currently_due      text[] NOT NULL DEFAULT '{}',
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- The durable scheduler of calls to Stripe that must happen exactly once: capture, cancel, refund,
-- transfer, reversal. (kind, order_id, step) is unique, so scheduling is idempotent; every call carries
-- an idempotency key made of the same three, so running a job twice moves money once.
CREATE TABLE money_jobs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('capture', 'cancel', 'refund', 'transfer', 'reversal')),
    order_id    uuid NOT NULL REFERENCES orders (id),
    step        integer NOT NULL DEFAULT 0,   -- admin refunds: 1, 2...; reversals: the refunded total they settle
    amount_cents integer,                     -- an admin's refund, a cancellation fee to capture
    request     jsonb,                        -- the Stripe request, fixed by the first run, replayed by any rerun
    generation  integer NOT NULL DEFAULT 0,   -- bumped when Stripe refused the request outright: decide anew
    due_at      timestamptz NOT NULL DEFAULT now(),
    state       text NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'running', 'waiting', 'done', 'skipped', 'failed')),
    attempts    integer NOT NULL DEFAULT 0,
    lease_until timestamptz,
    last_error  text,
    result      text,                         -- the Stripe object the job made or changed
    note        text,                         -- why (an admin's refund reason)
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, order_id, step)
);
CREATE INDEX money_jobs_due ON money_jobs (due_at) WHERE state IN ('pending', 'running');
CREATE INDEX money_jobs_order ON money_jobs (order_id);

-- Executed transfers to technicians; tech.stats earnings are these minus their reversals.
CREATE TABLE transfers (
    order_id        uuid PRIMARY KEY REFERENCES orders (id),
    technician_id   text NOT NULL,
    account_id      text NOT NULL,
    transfer_id     text NOT NULL UNIQUE,
    amount_cents    integer NOT NULL,
    reversed_cents  integer NOT NULL DEFAULT 0,
    refunded_basis  integer NOT NULL,          -- the order's refunded total when the amount was worked out
    currency        text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transfers_technician ON transfers (technician_id);
