"""The orders domain's Prometheus metrics, counted per process; gateway.metrics registers them.
Labels are closed sets (states): never an order, brand or user id."""

from prometheus_client import Counter, Histogram

RECIPIENT_BUCKETS = (0, 1, 5, 10, 50, 100, 500, 1000, 5000, 10000, 50000)
DISPATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ACCEPT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)

CREATED = Counter("orders_created", "Orders created (by consumers and by merchants for their customers)",
                  registry=None)
TRANSITIONS = Counter("orders_transitions", "Order state changes, by the state entered", ["state"], registry=None)

ANNOUNCED_TO = Histogram("orders_announcement_recipients", "Technicians told of an order when it was announced "
                         "(created, paid, released, repaired)", buckets=RECIPIENT_BUCKETS, registry=None)
DISPATCH = Histogram("orders_dispatch_seconds", "From an announcement's start (the pool write) to its last "
                     "recipient handed to delivery (this process's sessions written, the rest published)",
                     buckets=DISPATCH_BUCKETS, registry=None)

TO_ACCEPT = Histogram("orders_time_to_accept_seconds", "From an order's opening (created, paid or put back in the "
                      "pool) to a technician's accept", buckets=ACCEPT_BUCKETS, registry=None)

ALL = (CREATED, TRANSITIONS, ANNOUNCED_TO, DISPATCH, TO_ACCEPT)
