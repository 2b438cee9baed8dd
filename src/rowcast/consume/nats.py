"""Consume from NATS JetStream with a durable pull consumer (``nats://``, ``tls://``).

Reads what `rowcast.sinks.nats.NatsSink` publishes: messages on
``<prefix>.<schema>.<table>.<action>`` with body ``Change.to_json()`` and the change id
in the ``Nats-Msg-Id`` header.

URL: ``nats://[user:password@]host[:port][?option=value&...]``, options:

``stream``
    the JetStream stream, default ``rowcast``. It must exist (the relay's sink creates
    it): a missing one is a `ConfigError` that lists the streams there are, unless
    ``create=true``.
``create``
    ``true``: create the stream when missing, as the sink would (subjects
    ``<prefix>.>``), so a consumer may start before the relay. Default ``false``: a
    typo in ``stream`` is an error, never a new stream that captures ``<prefix>.>``.
``prefix``
    the sink's subject prefix, default ``rowcast``.
``subject``
    only these subjects, e.g. ``rowcast.shop.orders.*``; default ``<prefix>.>``.
``ack_wait``
    seconds JetStream waits for an ack before it redelivers a message, default 30: a
    consumer that died is replaced this long after. A running consumer reports the
    messages it holds (queued locally or being handled) in progress every third of
    the durable's ``ack_wait``, so a slow handler does not get them redelivered.
``dead_stream``
    the dead-letter stream, default ``<stream>_dead``, created with subjects
    ``<dead_stream>.>`` when the first message is parked, if missing.
``timeout``
    seconds to connect and to wait for JetStream's replies, default 10.

The durable consumer is named after the group (``--group``), with explicit acks and
no delivery limit (rowcast parks what keeps failing), created on the stream when
missing; one that exists is used as it is. When JetStream refuses a stream because
its subjects overlap another's (code 10065), the error names that stream.

A parked message is published to ``<dead_stream>.<group>.<its subject>`` with its body
and the headers ``Rowcast-Error`` (one line), ``Rowcast-Group``,
``Rowcast-Subject`` and ``Nats-Msg-Id: <change id>:<group>``; once JetStream stored it,
the original is acked. Changes given back on stop are nak'ed for prompt redelivery.
A message with the header ``Rowcast-Replay: <group>`` is a dead letter replayed for that
group (``rowcast dlq replay``; its change id in ``Rowcast-Change-Id``): the other
groups ack it unhandled.

nats-py is asyncio; the transport runs it on a private event loop in a daemon thread.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from .._url import boolean, masked, number, query, unknown_option
from ..backends import missing_extra
from ..errors import ConfigError, SinkError
from ..sinks._nats import LoopThread, connect, overlapping
from .transport import Delivery, decode

__all__ = ["NatsTransport"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_OPTIONS = ("stream", "prefix", "subject", "ack_wait", "dead_stream", "timeout", "create")
_OVERLAP = 10065
_NAME_IN_USE = 10058
_NAME = re.compile(r"[^.*>/\\\s]{1,255}")
_MAX_ACK_PENDING = 20_000


class NatsTransport:
    """The JetStream side of a `rowcast.consume.Consumer` (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        group: str = "rowcast",
        stream: str | None = None,
        prefix: str | None = None,
        subject: str | None = None,
        ack_wait: float | None = None,
        dead_stream: str | None = None,
        timeout: float | None = None,
        create: bool | str | None = None,
    ) -> None:
        self.url = masked(url)
        options, _, unknown = query(url, "this consumer", ("nats", "tls"), _OPTIONS, others=True)
        if unknown:
            name, value = unknown[0]
            raise unknown_option(url, name, value, "the NATS consumer", _OPTIONS)
        parts = urlsplit(url)
        if not parts.hostname:
            raise ConfigError(f"{self.url}: no host; e.g. nats://127.0.0.1:4222")
        try:
            parts.port  # noqa: B018  (raises on a malformed port)
        except ValueError as e:
            raise ConfigError(f"{self.url}: {e}") from e
        self.stream: str = stream or options.get("stream", "rowcast")
        self.prefix: str = prefix or options.get("prefix", "rowcast")
        self.subject: str = subject or options.get("subject", f"{self.prefix}.>")
        self.dead_stream: str = dead_stream or options.get("dead_stream", f"{self.stream}_dead")
        for what, name in (
            ("stream", self.stream),
            ("dead_stream", self.dead_stream),
            ("group", group),
        ):
            if not _NAME.fullmatch(name):
                raise ConfigError(
                    f"{self.url}: a JetStream {what} name has no '.', '*', '>', '/', '\\' or "
                    f"blanks, not {name!r}"
                )
        self.group = group
        self.ack_wait = number(url, "ack_wait", ack_wait, options, 30.0)
        self.timeout = number(url, "timeout", timeout, options, 10.0)
        self.create = boolean(url, "create", create, options, False)
        try:
            import nats
            import nats.errors
            import nats.js.api
            import nats.js.errors
        except ImportError as e:
            raise missing_extra("nats", "the NATS consumer", e) from e
        self._nats = nats
        self._errors = (nats.errors.Error, OSError, TimeoutError, asyncio.TimeoutError)
        self._server = urlunsplit(parts._replace(query=""))
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None
        self._generation = 0
        self._dead_ready = False  # the dead-letter stream is known to exist
        self._ack_wait: float = self.ack_wait  # the durable's own, once connected
        self._loop = LoopThread(
            "rowcast-nats-consumer", f"NATS consumer {self.url}", self.timeout, log
        )

    def __repr__(self) -> str:
        return f"<NatsTransport {self.url!r} stream={self.stream!r} group={self.group!r}>"

    # ------------------------------------------------------------ Transport

    def connect(self) -> None:
        self._run(self._connect())

    def fetch(self, limit: int, timeout: float) -> list[Delivery]:
        return self._run(self._fetch(limit, max(timeout, 0.05)))

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._run(self._settle(deliveries, "ack"))

    def dead_letter(self, parked: Sequence[tuple[Delivery, str]]) -> None:
        self._run(self._dead_letter(parked))

    @property
    def touch_every(self) -> float:
        """A third of the durable consumer's ack wait (its own, if it existed before)."""
        return self._ack_wait / 3

    def touch(self, deliveries: Sequence[Delivery]) -> None:
        """Reset the ack timers of `deliveries` (``+WPI``), one small publish each."""
        self._run(self._settle(deliveries, "in_progress"))

    def release(self, deliveries: Sequence[Delivery]) -> None:
        try:
            self._run(self._settle(deliveries, "nak"))
        except SinkError as e:  # best effort: ack_wait redelivers them anyway
            log.debug("nak failed: %s", e)

    def reset(self) -> None:
        try:
            self._run(self._disconnect())
        except SinkError as e:
            log.debug("dropping %s: %s", self.url, e)

    def close(self) -> None:
        self._loop.close(self._disconnect)

    # ------------------------------------------------------------ on the private loop

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        try:
            return self._loop.run(coroutine)
        except SinkError:
            raise
        except self._errors as e:
            raise SinkError(f"NATS consumer {self.url}, stream {self.stream!r}: {e!r}") from e

    async def _connect(self) -> None:
        await self._disconnect()
        nc = self._nc = await connect(
            self._nats,
            self._server,
            name=f"rowcast-consumer-{self.group}",
            who=f"NATS consumer {self.url}",
            timeout=self.timeout,
            log=log,
        )
        self._generation += 1
        self._dead_ready = False
        js = nc.jetstream(timeout=self.timeout)
        api = self._nats.js.api
        try:
            await self._ensure_stream(js, self.stream, f"{self.prefix}.>", self.create)
            try:
                info = await js.consumer_info(self.stream, self.group)
                waits = [info.config.ack_wait or self.ack_wait, *(info.config.backoff or ())]
                self._ack_wait = min(waits)  # the first redelivery comes after the least
            except self._nats.js.errors.NotFoundError:
                config = api.ConsumerConfig(
                    durable_name=self.group,
                    ack_policy=api.AckPolicy.EXPLICIT,
                    deliver_policy=api.DeliverPolicy.ALL,
                    ack_wait=self.ack_wait,
                    max_deliver=-1,
                    max_ack_pending=_MAX_ACK_PENDING,
                    filter_subject=self.subject,
                )
                await js.add_consumer(self.stream, config)
                self._ack_wait = self.ack_wait
            self._sub = await js.pull_subscribe_bind(durable=self.group, stream=self.stream)
        except self._nats.js.errors.APIError as e:
            await self._disconnect()
            raise SinkError(
                f"NATS consumer {self.url}: JetStream refused setting up stream {self.stream!r} "
                f"/ consumer {self.group!r}: {e.description} (code {e.err_code})"
            ) from e
        except BaseException:
            await self._disconnect()
            raise
        self._js = js

    async def _ensure_stream(self, js: Any, name: str, subjects: str, create: bool) -> None:
        """Stream `name` exists, or is created with `subjects` if `create`, else an error."""
        errors = self._nats.js.errors
        try:
            await js.stream_info(name)
            return
        except errors.NotFoundError:
            pass
        if not create:
            names = sorted(await self._streams())
            listed = ", ".join(repr(n) for n in names) if names else "none"
            raise ConfigError(
                f"NATS consumer {self.url}: JetStream has no stream {name!r} (it has: "
                f"{listed}); give ?stream= the stream the relay's sink writes to, or add "
                f"create=true to create {name!r} for subjects {subjects}"
            )
        try:
            await js.add_stream(name=name, subjects=[subjects])
            log.info("NATS consumer %s: created stream %s for %s", self.url, name, subjects)
        except errors.BadRequestError as e:
            if e.err_code == _NAME_IN_USE:  # made meanwhile by someone else: fine
                return
            if e.err_code == _OVERLAP:
                others = [n for n in await self._holding(subjects) if n != name]
                shown = ", ".join(repr(n) for n in others) or "(unknown)"
                raise ConfigError(
                    f"NATS consumer {self.url}: cannot create stream {name!r} for subjects "
                    f"{subjects}: they overlap the subjects of stream {shown} (code "
                    f"{e.err_code}); read that stream (?stream=), pick another ?prefix=, "
                    "or delete that stream if it is a leftover (nats stream rm NAME)"
                ) from e
            raise

    async def _streams(self) -> list[str]:
        """The names of every JetStream stream (empty when JetStream cannot list them)."""
        try:
            return await overlapping(self._nc, "", self.timeout)
        except (TimeoutError, self._nats.errors.Error, OSError, ValueError):
            return []

    async def _holding(self, subjects: str) -> list[str]:
        """The streams whose subjects overlap `subjects` (empty when unknown)."""
        try:
            return await overlapping(self._nc, subjects, self.timeout)
        except (TimeoutError, self._nats.errors.Error, OSError, ValueError):
            return []

    async def _disconnect(self) -> None:
        nc, self._nc, self._js, self._sub = self._nc, None, None, None
        if nc is not None and not nc.is_closed:
            await nc.close()

    async def _fetch(self, limit: int, timeout: float) -> list[Delivery]:
        if self._sub is None:
            await self._connect()
        try:
            messages = await self._sub.fetch(limit, timeout=timeout)
        except (TimeoutError, self._nats.errors.TimeoutError):
            return []
        generation = self._generation
        found = []
        for msg in messages:
            headers = msg.headers or {}
            replay = headers.get("Rowcast-Replay")
            if replay is not None and replay != self.group:  # another group's dead letter
                await msg.ack()
                continue
            change_id = headers.get("Rowcast-Change-Id") or headers.get("Nats-Msg-Id")
            found.append(decode(change_id, msg.data, msg, generation, replay is not None))
        return found

    async def _settle(self, deliveries: Sequence[Delivery], how: str) -> None:
        """Call `how` (``ack``, ``nak``, ``in_progress``) on each message of this connection."""
        nc, generation = self._nc, self._generation
        if nc is None or nc.is_closed:
            return  # an older connection's messages: JetStream redelivers them
        for delivery in deliveries:
            if delivery.generation == generation:
                await getattr(delivery.token, how)()

    async def _dead_letter(self, parked: Sequence[tuple[Delivery, str]]) -> None:
        if self._js is None:
            await self._connect()
        js, generation = self._js, self._generation
        if not self._dead_ready:
            await self._ensure_stream(js, self.dead_stream, f"{self.dead_stream}.>", True)
            self._dead_ready = True
        for delivery, error in parked:
            msg = delivery.token
            line = " ".join(error.split())[:4000]
            headers = {
                "Rowcast-Error": line,
                "Rowcast-Group": self.group,
                "Rowcast-Subject": msg.subject,
            }
            if delivery.id:
                headers["Nats-Msg-Id"] = f"{delivery.id}:{self.group}"
            subject = f"{self.dead_stream}.{self.group}.{msg.subject}"
            await js.publish(subject, msg.data, stream=self.dead_stream, headers=headers)
            if delivery.generation == generation:
                await msg.ack()
