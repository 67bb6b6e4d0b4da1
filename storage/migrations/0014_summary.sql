-- What admin.summary reads for a brand's range without touching other orders' rows: the moments an
-- order opened, was accepted and completed straight from this index (index-only once vacuumed), its
-- declines by order, and every brand's orders of a range by creation time (admins' all-brand view).
CREATE INDEX order_events_moves ON order_events (order_id, to_state) INCLUDE (at);
CREATE INDEX order_declines_order ON order_declines (order_id);
CREATE INDEX orders_created ON orders (created_at);
