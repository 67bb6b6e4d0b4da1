"""The chat domain's tunables: push previews and the push outbox's retries."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ChatRules:
    preview_chars: int = 100  # a push shows this much of a message
    push_max_attempts: int = 8  # then the push goes to the dead letter
    push_retry_base_s: float = 2.0  # backoff: base * 2^(attempt-1), jittered
    push_poll_s: float = 1.0
    # Without FCM credentials a process only logs pushes, and only those this overdue, so that in
    # a fleet where some processes can send, none is lost to one that cannot.
    push_log_after_s: float = 30.0
