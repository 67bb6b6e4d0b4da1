"""The orders domain's tunables (dispatch radius, feed cap, staleness, where uploads go, how long
invited customers have to claim their account)."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OrderRules:
    radius_mi: float = 50.0  # announcement radius of an order, default radius of the feed
    max_radius_mi: float = 100.0  # the feed's cap
    stale_after_s: float = 300.0  # a position older than this does not count for matching
    upload_dir: str = "var/uploads"
    invite_ttl_s: float = 14 * 86_400.0  # how long a claim code of a customer a merchant invited works
