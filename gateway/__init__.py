"""Sessions: accept, authenticate, route frames, deliver events (locally and across processes)."""
