"""The chat domain's tunables: push previews and the push outbox's retries."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ChatRules:
    preview_chars: int = 100  # a push shows this much of a message
    push_max_attempts: int = 8  # then the push goes to the dead letter
    push_retry_base_s: float = 2.0  # backoff: base * 2^(attempt-1), jittered
    push_poll_s: float = 1.0
    # Without FCM credentials a process only logs pushes (and records them sent), and only those
    # this overdue: a process that can send goes first while it is up. Give every node of a fleet
    # the same FCM_CREDENTIALS; a push that waited this long for a sender that is down is lost.
    push_log_after_s: float = 30.0
    # A node that has not beaten in Redis for this long is dead: its users no longer count as online
    # (they get pushes). Every node of a fleet needs the same PRESENCE_TTL_S.
    presence_ttl_s: float = 30.0
