"""Deliver an event to a user's sessions or a group's, wherever they are connected.

Every channel (`u:<user id>`, `g:<group>`) is a Redis pub/sub channel. A process subscribes to
a channel while it holds at least one session in it, delivers to its own sessions directly, and
publishes for the others; each published message starts with the publisher's node id so the
publisher skips its own echo. Subscription changes are batched: one SUBSCRIBE for many sessions.
Ending a user's sessions (a suspension) travels on a control channel every process listens to.

Events for many users at once (an order announced to thousands of technicians) are routed per
node (`DELIVERY_ROUTING=nodes`): the presence directory (storage.push) says which processes
hold each recipient, and each of them gets, on its own channel `n:<node id>`, only its users'
share; a process holding none of them gets nothing. With `multicast`, or when the directory
cannot answer, one message with every recipient goes to the channel every process listens to.

A stream of events to one user (an answer's `ai.delta`s) looks the user up in that directory at
most once every STREAM_RECHECK_S and publishes only to the other processes it names: a consumer
signed in on this process alone costs no Redis command per event.
"""

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from typing import Any, Protocol

import msgspec
import redis.asyncio as aioredis
from prometheus_client import Counter

from protocol.codec import MSGPACK, Codec
from protocol.frames import Event
from storage import lifecycle, push

log = logging.getLogger(__name__)
NODE_ID_LEN = 16


class Sink(Protocol):
    codec: Codec

    def push(self, frame: bytes) -> None: ...

    def disconnect(self, reason: str) -> None:
        """End the session: tell it `reason` (an error code), then close it."""

    def unwatch(self) -> None:
        """Leave the groups joined on request (the back office's feed) and say so."""


def user_channel(user_id: str) -> str:
    return "u:" + user_id


def group_channel(group: str) -> str:
    return "g:" + group


MULTICAST = "m"  # every process listens: one message carries events for many users
Batches = list[tuple[list[str], Event]]
BATCHES = msgspec.msgpack.Decoder(list[tuple[list[str], bytes]])  # multicast: [(users, event)...]
# A node's share: (what its events begin with, [(users, the rest of an event)...]). The events of one
# announcement differ only in their last field (the distance), so each travels as a few bytes.
SHARE = msgspec.msgpack.Decoder(tuple[bytes, list[tuple[list[str], bytes]]])
# Every process listens, whichever sessions it holds: a session signing in as the user at that
# moment is closed too once it is in the user's channel (see handlers.accounts.auth for the rest).
CONTROL = "c"
DISCONNECT = msgspec.msgpack.Decoder(tuple[str, str])  # (user id, reason)
UNWATCH = "unwatch"  # a control message's reason that ends the user's watch of the feed, not their sessions
ROUTINGS = ("nodes", "multicast")
STREAM_RECHECK_S = 1.0  # how long a stream trusts its last look at where its user's sessions are
STREAM_USERS = 10_000  # users whose whereabouts a process remembers before it forgets the stale ones

# Counted per process; gateway.metrics registers them. What a process receives from Redis for
# delivery is what per-node routing shrinks: a node's share instead of every recipient.
BYTES_RECEIVED = Counter("gateway_delivery_bytes_received", "Bytes of pub/sub messages this process received "
                         "for delivery (payloads, its own echoes included; Redis's framing not), by channel: "
                         "node (its share of events for many users), multicast (every recipient's), user, group, "
                         "control", ["channel"], registry=None)
RECIPIENTS_DECODED = Counter("gateway_delivery_recipients_decoded", "User ids this process decoded from other "
                             "processes' events for many users (node and multicast channels)", registry=None)
ROUTING_FALLBACKS = Counter("gateway_delivery_routing_fallbacks", "Events for many users multicast to every "
                            "process because the presence directory could not say where their users are (Redis "
                            "failed, or lost its data and this process has not restored its presence yet)",
                            registry=None)
ALL = (BYTES_RECEIVED, RECIPIENTS_DECODED, ROUTING_FALLBACKS)
_RECEIVED = {kind: BYTES_RECEIVED.labels(kind) for kind in ("node", "multicast", "user", "group", "control")}


def node_channel(node: str) -> str:
    return "n:" + node


def _common_prefix(items: list[bytes]) -> bytes:
    """What all the items begin with: what the first and the last in sorted order share."""
    first, last = min(items), max(items)
    n, limit = 0, min(len(first), len(last))
    while n < limit and first[n] == last[n]:
        n += 1
    return first[:n]


class Hub:
    def __init__(self, redis: aioredis.Redis, routing: str = "nodes") -> None:
        assert routing in ROUTINGS
        self.node = os.urandom(NODE_ID_LEN)
        self.routing = routing
        self._own = node_channel(self.node.hex())
        self._redis = redis
        self._pubsub = redis.pubsub()
        self.channels: dict[str, set[Sink]] = {}
        self._subscribed: set[str] = set()
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._elsewhere: dict[str, tuple[float, list[str] | None]] = {}  # publish_stream's: user -> (when, nodes)
        self.listening = False  # False from a lost pub/sub connection until its channels are back
        self.regained = asyncio.Event()  # set when they are back after a loss (Redis may have lost its data)

    async def start(self) -> None:
        # The node channel opens the pub/sub connection before the reader starts listening.
        await self._pubsub.subscribe(self._own, MULTICAST, CONTROL)
        self._tasks = [asyncio.create_task(self._read(), name="hub-read"),
                       asyncio.create_task(self._sync(), name="hub-sync")]

    async def stop(self) -> None:
        await lifecycle.stop(self._tasks)
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    async def join(self, sink: Sink, channels: Iterable[str]) -> None:
        """Add the sink to the channels; returns once this process receives their messages."""
        waits = []
        for channel in channels:
            members = self.channels.setdefault(channel, set())
            members.add(sink)
            if channel not in self._subscribed or channel in self._dirty:
                future = asyncio.get_running_loop().create_future()
                self._waiters.setdefault(channel, []).append(future)
                waits.append(future)
                self._dirty.add(channel)
        if waits:
            self._wake.set()
            await asyncio.gather(*waits)

    def leave(self, sink: Sink, channels: Iterable[str]) -> None:
        for channel in channels:
            members = self.channels.get(channel)
            if members is None:
                continue
            members.discard(sink)
            if not members:
                del self.channels[channel]
                self._resolve(channel)  # joins still waiting are moot: their sinks left (a session ended)
                self._dirty.add(channel)
                self._wake.set()

    async def publish(self, channel: str, event: Event) -> int:
        """Deliver to this process's sessions and to every other process; returns the local count."""
        delivered = self.deliver_local(channel, event)
        await self._redis.publish(channel, self.node + MSGPACK.encode(event))
        return delivered

    async def publish_stream(self, user_id: str, event: Event) -> int:
        """Like `publish` to the user's channel, for one of many events in quick succession: the
        other processes holding a session of the user are looked up in the presence directory at
        most once every STREAM_RECHECK_S, and only they are sent the event, each on its node
        channel. A session that signs in elsewhere meanwhile misses at most that long of the
        stream (the stream's result reaches it by `publish`). When the directory cannot say (it
        failed, Redis lost it, or routing is `multicast`) the event goes to the user's channel."""
        delivered = self.deliver_local(user_channel(user_id), event)
        now = time.monotonic()
        known = self._elsewhere.get(user_id)
        if known is None or now - known[0] >= STREAM_RECHECK_S:
            where = await self._where([user_id]) if self.routing == "nodes" else None
            if len(self._elsewhere) >= STREAM_USERS:
                self._elsewhere = {u: k for u, k in self._elsewhere.items() if now - k[0] < STREAM_RECHECK_S}
            self._elsewhere[user_id] = known = (now, None if where is None else where.get(user_id, []))
        if known[1] is None:
            await self._redis.publish(user_channel(user_id), self.node + MSGPACK.encode(event))
        else:
            await self._send_shares([([user_id], event)], {user_id: known[1]})
        return delivered

    async def publish_many(self, batches: Batches) -> int:
        """Each event to every session of its users, wherever they are: to this process's at
        once, then one Redis message per other process holding some of them, with only their
        share (an order announced to thousands of technicians on four nodes is one lookup and at
        most three PUBLISHes, not thousands); returns the local count. An announcement routed
        while a session signs in may miss it, as a multicast one may: see `push.locate`."""
        delivered = sum(self.deliver_local_many(users, event) for users, event in batches)
        if self.routing == "multicast" or not await self._route(batches):
            payload = [(users, MSGPACK.encode(event)) for users, event in batches]
            await self._redis.publish(MULTICAST, self.node + MSGPACK.encode_any(payload))
        return delivered

    async def _route(self, batches: Batches) -> bool:
        """Publish to each other node its users' share of the events (each event encoded only if
        some node needs it: a chat message between two sessions of this process costs one lookup
        and no encoding); False when the directory cannot say where the users are (the caller
        multicasts instead: nothing is lost)."""
        users = [user for recipients, _ in batches for user in recipients]  # (a repeated one is looked up twice)
        if not users:
            return True
        where = await self._where(users)
        if where is None:
            ROUTING_FALLBACKS.inc()
            return False
        await self._send_shares(batches, where)
        return True

    async def _where(self, users: list[str]) -> dict[str, list[str]] | None:
        """`push.locate`'s answer, or None when the directory cannot say (its lookup failed too)."""
        try:
            return await push.locate(self._redis, self.node.hex(), users)
        except (aioredis.RedisError, OSError) as exc:
            if lifecycle.cancelling():
                raise
            log.warning("presence lookup failed, sending to every process instead: %r", exc)
            return None

    async def _send_shares(self, batches: Batches, where: dict[str, list[str]]) -> None:
        """Each node named in `where` its users' share of the events, on its node channel, in one round trip."""
        shares: dict[str, list[tuple[list[str], bytes]]] = {}
        sent: list[bytes] = []  # the events some other node gets
        for recipients, event in batches:
            split: dict[str, list[str]] = {}
            for user in recipients:
                for node in where.get(user, ()):
                    split.setdefault(node, []).append(user)
            if split:
                encoded = MSGPACK.encode(event)
                sent.append(encoded)
                for node, theirs in split.items():
                    shares.setdefault(node, []).append((theirs, encoded))
        if shares:
            common = len(_common_prefix(sent))
            pipe = self._redis.pipeline(transaction=False)
            for node, share in shares.items():
                head = share[0][1][:common]
                body = [(theirs, encoded[common:]) for theirs, encoded in share]
                pipe.publish(node_channel(node), self.node + MSGPACK.encode_any((head, body)))
            await pipe.execute()

    async def disconnect(self, user_id: str, reason: str) -> int:
        """End every session of the user on every process; returns how many were here."""
        ended = self.disconnect_local(user_id, reason)
        await self._redis.publish(CONTROL, self.node + msgspec.msgpack.encode((user_id, reason)))
        return ended

    async def unwatch(self, user_id: str) -> int:
        """Stop every session of the user watching the feed, on every process (their brands changed)."""
        return await self.disconnect(user_id, UNWATCH)

    def holds(self, user_id: str) -> bool:
        """Whether a session of the user is on this process."""
        return user_channel(user_id) in self.channels

    def local_users(self) -> list[str]:
        """The users with a session on this process."""
        return [channel[2:] for channel in self.channels if channel.startswith("u:")]

    def disconnect_local(self, user_id: str, reason: str) -> int:
        sinks = list(self.channels.get(user_channel(user_id), ()))
        for sink in sinks:
            if reason == UNWATCH:
                sink.unwatch()
            else:
                sink.disconnect(reason)
        return len(sinks)

    def deliver_local_many(self, users: list[str], event: Event) -> int:
        frames: dict[Codec, bytes] = {}
        delivered = 0
        for user in users:
            for sink in self.channels.get(user_channel(user), ()):
                frame = frames.get(sink.codec)
                if frame is None:
                    frame = frames[sink.codec] = sink.codec.encode(event)
                sink.push(frame)
                delivered += 1
        return delivered

    def deliver_local(self, channel: str, event: Event) -> int:
        sinks = self.channels.get(channel)
        if not sinks:
            return 0
        frames: dict[Codec, bytes] = {}  # encode once per wire format
        for sink in list(sinks):
            frame = frames.get(sink.codec)
            if frame is None:
                frame = frames[sink.codec] = sink.codec.encode(event)
            sink.push(frame)
        return len(sinks)

    async def _sync(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            add = [c for c in dirty if c in self.channels and c not in self._subscribed]
            drop = [c for c in dirty if c not in self.channels and c in self._subscribed]
            try:
                if add:
                    await self._pubsub.subscribe(*add)
                    self._subscribed.update(add)
                if drop:
                    self._subscribed.difference_update(drop)
                    await self._pubsub.unsubscribe(*drop)
            except (aioredis.ConnectionError, OSError) as exc:
                if lifecycle.cancelling():
                    raise
                log.warning("pub/sub subscription update failed, retrying: %s", exc)
                self._dirty.update(add)
                self._dirty.update(drop)
                self._subscribed.difference_update(add)
                await asyncio.sleep(0.5)
                self._wake.set()
                continue
            for channel in dirty:  # already subscribed (left and rejoined before this flush)
                if channel in self._subscribed and channel not in add:
                    self._resolve(channel)

    def _kind(self, channel: str) -> str:
        if channel == self._own:
            return "node"
        if channel in (MULTICAST, CONTROL):
            return "multicast" if channel == MULTICAST else "control"
        return "user" if channel.startswith("u:") else "group"

    def _resolve(self, channel: str) -> None:
        for future in self._waiters.pop(channel, ()):
            if not future.done():
                future.set_result(None)

    async def _read(self) -> None:
        while True:
            try:
                message: dict[str, Any] | None = await self._pubsub.get_message(timeout=None)
            except (aioredis.ConnectionError, OSError) as exc:
                if lifecycle.cancelling():
                    raise
                log.warning("pub/sub connection lost, reconnecting: %s", exc)
                self.listening = False
                await asyncio.sleep(0.5)
                continue
            if message is None:
                continue
            kind, channel = message["type"], message["channel"].decode()
            if kind == "subscribe":
                if not self.listening and self._subscribed:  # a reconnection, not the start
                    self.regained.set()
                self.listening = True  # the first confirmation of a (re)connection's subscriptions
                self._resolve(channel)
            elif kind == "message":
                data: bytes = message["data"]
                what = self._kind(channel)
                _RECEIVED[what].inc(len(data))
                if data[:NODE_ID_LEN] == self.node:
                    continue
                try:
                    if what == "node":
                        head, body = SHARE.decode(data[NODE_ID_LEN:])
                        for users, rest in body:
                            RECIPIENTS_DECODED.inc(len(users))
                            self.deliver_local_many(users, MSGPACK.decode_event(head + rest))
                    elif what == "multicast":
                        for users, encoded in BATCHES.decode(data[NODE_ID_LEN:]):
                            RECIPIENTS_DECODED.inc(len(users))
                            self.deliver_local_many(users, MSGPACK.decode_event(encoded))
                    elif channel == CONTROL:
                        self.disconnect_local(*DISCONNECT.decode(data[NODE_ID_LEN:]))
                    else:
                        self.deliver_local(channel, MSGPACK.decode_event(data[NODE_ID_LEN:]))
                except msgspec.DecodeError:
                    log.warning("undecodable event on %s", channel)
