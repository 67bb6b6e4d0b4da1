"""Domain rules: plain async functions of a context and a typed request, one module per domain."""
