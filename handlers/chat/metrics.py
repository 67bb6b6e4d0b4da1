"""The chat domain's Prometheus metrics (the push worker's are in handlers.chat.push); gateway.metrics
registers them. Labels are closed sets (message kinds), never a room or user id."""

from prometheus_client import Counter, Histogram

DELIVERY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

STORED = Counter("chat_messages_stored", "Chat messages committed, by kind: text (a member's), system (an order's "
                 "state told in its room); a resent client id is not counted twice", ["kind"], registry=None)
for _kind in ("text", "system"):
    STORED.labels(_kind)
DELIVERY = Histogram("chat_delivery_seconds", "Delivery lag: from a message's arrival at this process's chat writer "
                     "to its room handed to delivery (this process's sessions written, the rest published), "
                     "batching and the write to PostgreSQL included", buckets=DELIVERY_BUCKETS, registry=None)

ALL = (STORED, DELIVERY)
