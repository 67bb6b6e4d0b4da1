"""Programs built on protocol's client library: the debug console and the load generator."""
