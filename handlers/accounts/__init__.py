"""Accounts and sessions: sign-up, log-in, tokens, passwords."""
