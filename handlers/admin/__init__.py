"""The back office: staff operations."""
