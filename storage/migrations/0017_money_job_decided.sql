-- When a money job's Stripe request (and so its idempotency key) was first fixed: Stripe keeps an
-- idempotency key for at least 24 hours, so a replay later than that could move the money twice.
ALTER TABLE money_jobs ADD COLUMN decided_at timestamptz;
UPDATE money_jobs SET decided_at = updated_at WHERE request IS NOT NULL;
