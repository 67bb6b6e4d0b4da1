-- Merchants' orders for their customers: the customer's contact sealed on the order, and consumers
-- invited by a merchant's order, who claim their account with a one-time code.

-- NULL: an invited account nobody has claimed yet (no password signs in to it).
ALTER TABLE users
    ALTER COLUMN password_hash DROP NOT NULL,
    ADD COLUMN claim_hash bytea,              -- sha256 of the live claim code; the code is never stored
    ADD COLUMN claim_expires_at timestamptz,
    ADD COLUMN claimed_at timestamptz;
CREATE UNIQUE INDEX users_claim_hash ON users (claim_hash);

-- {name, phone, email} as the merchant gave them: storage.crypto envelope bound to the order.
ALTER TABLE orders ADD COLUMN customer_enc bytea;
