"""The orders domain's Prometheus metrics, counted per process; gateway.metrics registers them.
Labels are closed sets (states): never an order, brand or user id."""

from prometheus_client import Counter

CREATED = Counter("orders_created", "Orders created (by consumers and by merchants for their customers)",
                  registry=None)
TRANSITIONS = Counter("orders_transitions", "Order state changes, by the state entered", ["state"], registry=None)

ALL = (CREATED, TRANSITIONS)
