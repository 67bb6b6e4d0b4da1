-- The back office's order board (admin.orders) filters and sorts in SQL: indexes for the common
-- filters and sorts not covered yet (brand, consumer and technician have theirs since 0002), and
-- for an order's Stripe events, found by the id of the object they name (admin.order).
CREATE INDEX orders_created ON orders (created_at DESC, id DESC);
CREATE INDEX orders_updated ON orders (updated_at DESC, id DESC);
CREATE INDEX orders_state ON orders (state, created_at DESC, id DESC);
CREATE INDEX orders_sku ON orders (sku_id, created_at DESC, id DESC);
CREATE INDEX orders_payment_state ON orders (payment_state, created_at DESC, id DESC);
CREATE INDEX stripe_events_object ON stripe_events ((payload -> 'object' ->> 'id'));
