"""`NatsSink`: every change a NATS JetStream message (``nats://``, ``tls://``).

URL: ``nats://[user:password@]host[:port][?option=value&...]`` (``tls://`` for TLS),
options:

``stream``
    the JetStream stream, default ``rowcast``; created when missing, with subjects
    ``<prefix>.>`` (file storage, the server's other defaults). A stream that exists
    is used as it is: its limits, retention and replicas are yours to set.
``prefix``
    the first subject token(s), default ``rowcast``.
``duplicate_window``
    seconds JetStream remembers message ids, only for a stream the sink creates;
    default: the server's (2 minutes).
``timeout``
    seconds to connect, and to wait for publish acks, default 10.

A change is published to ``<prefix>.<schema>.<table>.<action>`` (``_`` for a change
without schema; ``.``, ``*``, ``>``, ``%`` and blanks inside a name are written as
``%XX``) with body ``Change.to_json()`` and headers

==================  =======================================================
``Nats-Msg-Id``     the change id (`rowcast.sinks.change_id`): JetStream drops
                    a message whose id it stored within the duplicate window
``Nats-Expected-Stream``  the stream name: a subject caught by another stream
                    is refused, not stored elsewhere
==================  =======================================================

A batch is published at once, then `deliver` waits for every publish ack: each ack
means the stream stored the message (or already had its id). One connection
publishes in order and one stream keeps one order, so messages are in commit order
across every table of the stream. A re-delivered batch is deduplicated within the
duplicate window. Consumers read with a durable consumer (pull or push, filtered by
subject, e.g. ``rowcast.shop.orders.*``), acking each message.

`check` connects and makes sure of the stream: one that exists must take every
subject the sink publishes to (``<prefix>.*.*.*``); a missing one is created, and
when its subjects overlap another stream's, the error names that stream.

Errors at the boundary: an unreachable server, no ack within ``timeout``, no stream
listening (the retry creates it again) and a full stream (``discard: new``) are a
`TransientSinkError`; refused credentials or permissions, a stream that does not
take the sink's subjects or that another stream overlaps, a message larger than
the server's ``max_payload`` and any other JetStream refusal are a
`PermanentSinkError`.

nats-py is asyncio; the sink runs it on a private event loop in a daemon thread
behind its blocking API, so it works from any thread, inside a running loop or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .. import _speedups
from .._url import masked, number, query
from ..backends import missing_extra
from ..change import Change
from ..errors import ConfigError, PermanentSinkError, SinkError, TransientSinkError
from ._nats import LoopThread, connect, overlapping, refused_access
from .base import FORMAT_OPTIONS, Batch, encoder

__all__ = ["NatsSink", "subject_token"]

log = logging.getLogger(__name__)

_OPTIONS = ("stream", "prefix", "duplicate_window", "timeout", *FORMAT_OPTIONS)
_UNSAFE = re.compile(r"[.*>%\x00-\x20\x7f]")
_STREAM_NAME = re.compile(r"[^.*>/\\\s]{1,255}")
_PREFIX = re.compile(r"[^.*>\s]+(\.[^.*>\s]+)*")
# JetStream API error codes (nats-server's errors.json)
_FULL = {10077: "the stream holds its max_msgs", 10078: "the stream holds its max_bytes"}
_FULL[10047] = "the server has no storage left"
_WRONG_STREAM = 10060
_NAME_IN_USE = 10058
_OVERLAP = 10065
_PASSING = {10008, 10023}  # JetStream temporarily unavailable, insufficient resources


def subject_token(name: str) -> str:
    """`name` as one subject token: ``.``, ``*``, ``>``, ``%`` and blanks as ``%XX``."""
    return _UNSAFE.sub(lambda m: f"%{ord(m.group()):02X}", name)


class NatsSink:
    """Deliver changes as JetStream messages (see the module docstring).

    Connects in `check` or on the first `deliver`, and again after any failure
    (nats-py's own reconnection is off, so a broken connection is a
    `TransientSinkError` the relay retries, never a silent buffer). Not thread-safe:
    one thread delivers at a time.
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str | None = None,
        prefix: str | None = None,
        duplicate_window: float | None = None,
        timeout: float | None = None,
    ) -> None:
        self.url = masked(url)
        options = _parse(url)
        self.stream: str = stream if stream is not None else options.get("stream", "rowcast")
        self.prefix: str = prefix if prefix is not None else options.get("prefix", "rowcast")
        self._encoded = encoder(url, options, self.prefix)
        if not _STREAM_NAME.fullmatch(self.stream):
            raise ConfigError(
                f"{self.url}: a JetStream stream name has no '.', '*', '>', '/', '\\' or "
                f"blanks, not {self.stream!r}"
            )
        if not _PREFIX.fullmatch(self.prefix):
            raise ConfigError(
                f"{self.url}: the subject prefix is dot-separated tokens without '*', '>' "
                f"or blanks, not {self.prefix!r}"
            )
        self.duplicate_window: float | None = number(
            url, "duplicate_window", duplicate_window, options, None
        )
        self.timeout: float = number(url, "timeout", timeout, options, 10.0)
        try:
            import nats
            import nats.errors
            import nats.js.errors
        except ImportError as e:
            raise missing_extra("nats", "the NATS sink", e) from e
        self._nats = nats
        self._server = urlunsplit(urlsplit(url)._replace(query=""))
        self._subjects: dict[tuple[str | None, str, str], str] = {}
        self._nc: Any = None
        self._seen: list[BaseException] = []  # the connection's async errors (permissions)
        self._inbox = ""  # the ack subject prefix of the current connection
        self._batch: _Acks | None = None  # the acks of the batch being published
        self._sequence = 0  # the ack token of the last message published
        self._first = 1  # the ack token of the batch's first message
        self._publisher = _speedups.jetstream_publisher(self.stream)
        self._acks = _speedups.jetstream_acks()
        self._loop = LoopThread("rowcast-nats-sink", f"NATS sink {self.url}", self.timeout, log)
        self._closed = False

    def __repr__(self) -> str:
        return f"<NatsSink {self.url!r} stream={self.stream!r}{' closed' if self._closed else ''}>"

    def subject(self, change: Change) -> str:
        """The subject `change` is published to."""
        key = (change.schema, change.table, change.action.value)
        subject = self._subjects.get(key)
        if subject is None:
            schema = subject_token(change.schema) if change.schema else "_"
            subject = f"{self.prefix}.{schema}.{subject_token(change.table)}.{key[2]}"
            self._subjects[key] = subject
        return subject

    def check(self) -> None:
        """Connect (again) and make sure of the stream (module docstring)."""
        if self._closed:
            raise PermanentSinkError(f"{self!r} is closed")
        self._loop.run(self._connect())

    def deliver(self, batch: Batch) -> None:
        """Publish every change of `batch`; return once JetStream acked every one.

        Raises `TransientSinkError` when the server is unreachable, no stream takes a
        subject (the retry creates it), the stream is full (``discard: new``) or an
        ack does not come within ``timeout``; `PermanentSinkError` when another stream
        holds a subject, a message is too large, or JetStream refuses it otherwise.
        Messages before the failed one may be stored; the relay's retry re-sends them
        and JetStream drops them as duplicates.
        """
        if self._closed:
            raise PermanentSinkError(f"{self!r} is closed")
        subject = self.subject
        messages = [
            (subject(change), body.encode(), change_id)
            for change_id, change, body in self._encoded(
                batch
            )  # ids first: a bad change sends nothing
        ]
        if messages:
            self._loop.run(self._publish(messages))

    def close(self) -> None:
        """Close the connection and stop the private event loop; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._loop.close(self._disconnect)

    # ------------------------------------------------------------ on the private loop

    async def _connect(self) -> None:
        await self._disconnect()
        self._seen = []
        nc = self._nc = await connect(
            self._nats,
            self._server,
            name="rowcast-sink",
            who=f"NATS sink {self.url}",
            timeout=self.timeout,
            log=log,
            seen=self._seen,
            skip_subject_validation=True,  # `subject` makes only valid subjects
        )
        try:
            await self._ensure_stream(nc, nc.jetstream(timeout=self.timeout))
            # nats-py's publish_async never settles a publish that JetStream refuses with a
            # 503 code (a full stream): acks are taken on an inbox of our own instead
            self._inbox = nc.new_inbox() + "."
            self._batch = None
            await self._acks.subscribe(nc, self._inbox + "*", self._on_ack)
        except (self._nats.errors.Error, OSError) as e:
            await self._disconnect()
            raise TransientSinkError(
                f"NATS sink {self.url}: cannot subscribe to acks: {e!r}"
            ) from e
        except BaseException:
            await self._disconnect()
            raise

    async def _ensure_stream(self, nc: Any, js: Any) -> None:
        """The stream exists and takes the sink's subjects, or is created (module docstring)."""
        js_errors = self._nats.js.errors
        where = f"NATS sink {self.url}"
        try:
            info = await js.stream_info(self.stream)
        except js_errors.NotFoundError:
            info = None
        except (TimeoutError, self._nats.errors.Error, OSError) as e:
            raise self._unanswered(e, "JetStream does not answer") from e
        published = f"{self.prefix}.*.*.*"  # <prefix>.<schema>.<table>.<action>
        if info is not None:
            subjects = list(info.config.subjects or [])
            if not any(_covers(pattern, published) for pattern in subjects):
                raise PermanentSinkError(
                    f"{where}: stream {self.stream!r} takes subjects {subjects}, not every "
                    f"subject the sink publishes to ({published})",
                    f"add {self.prefix}.> to its subjects, or give the sink the ?stream= "
                    "or ?prefix= of a stream that takes them",
                )
            return
        config: dict[str, Any] = {"name": self.stream, "subjects": [f"{self.prefix}.>"]}
        if self.duplicate_window is not None:
            config["duplicate_window"] = self.duplicate_window
        try:
            await js.add_stream(**config)
            log.info("NATS sink %s: created stream %s for %s.>", self.url, self.stream, self.prefix)
        except js_errors.APIError as e:
            if e.err_code == _NAME_IN_USE:  # made meanwhile by another relay: fine
                return
            what = f"{where}: cannot create stream {self.stream!r} for subjects {self.prefix}.>"
            if e.err_code == _OVERLAP:
                try:
                    others = await overlapping(nc, f"{self.prefix}.>", self.timeout)
                except (TimeoutError, self._nats.errors.Error, OSError):
                    others = []
                names = ", ".join(repr(n) for n in others if n != self.stream) or "(unknown)"
                raise PermanentSinkError(
                    f"{what}: they overlap the subjects of stream {names} (code {e.err_code})",
                    "relay into that stream (?stream=), pick another ?prefix=, or delete "
                    "that stream if it is a leftover (nats stream rm NAME)",
                ) from e
            raise PermanentSinkError(
                f"{what}: {e.description} (code {e.err_code})",
                "create the stream yourself, or pick another ?stream= / ?prefix=",
            ) from e
        except (TimeoutError, self._nats.errors.Error, OSError) as e:
            raise self._unanswered(e, "cannot create the stream") from e

    def _unanswered(self, error: BaseException, what: str) -> SinkError:
        """A JetStream API request that failed: refused access is permanent, else transient."""
        message = f"NATS sink {self.url}: {what}: {error!r}"
        if refused_access(error, *self._seen):
            return PermanentSinkError(message, "allow the user the JetStream API ($JS.API.>)")
        return TransientSinkError(message)

    async def _disconnect(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            await nc.close()

    async def _publish(self, messages: list[tuple[str, bytes, str]]) -> None:
        if self._nc is None or not self._nc.is_connected:
            await self._connect()
        nc, inbox = self._nc, self._inbox
        limit = nc.max_payload
        for index, (_, body, _) in enumerate(messages):  # what nc.publish would refuse
            if len(body) > limit:
                too_large = self._nats.errors.MaxPayloadError()
                raise self._error(too_large, index, len(messages)) from too_large
        batch = self._batch = _Acks(len(messages), asyncio.get_running_loop())
        first = self._sequence + 1
        self._sequence += len(messages)
        outgoing = [
            (subject, f"{inbox}{first + i}", body, msg_id)
            for i, (subject, body, msg_id) in enumerate(messages)
        ]
        self._first = first
        try:
            await self._publisher.publish(nc, outgoing)  # one coroutine: published in order
            await asyncio.wait_for(asyncio.shield(batch.done), self.timeout)
        except BaseException as e:
            self._batch = None
            await self._disconnect()
            if isinstance(e, Exception):
                raise self._error(e, batch.count, len(messages)) from e
            raise
        self._batch = None
        failed = sorted(batch.failed, key=lambda found: found[0])  # in message order
        if failed:
            index, error = failed[0]
            holders: list[str] = []
            if isinstance(error, _Refused) and error.code == _WRONG_STREAM:
                with contextlib.suppress(
                    TimeoutError, self._nats.errors.Error, OSError, ValueError
                ):
                    holders = await overlapping(nc, f"{self.prefix}.>", self.timeout)
            if not isinstance(error, _Refused):
                await self._disconnect()
            problem = self._error(error, index, len(messages), refused=len(failed), holders=holders)
            raise problem from error

    def _on_ack(self, subject: bytes, data: bytes, status: bytes) -> None:
        """A publish ack (or refusal) from JetStream, on the reply subject of one message."""
        batch = self._batch
        if batch is None:
            return  # a late ack, of a batch given up
        try:
            index = int(subject[len(self._inbox) :]) - self._first
        except ValueError:
            return
        if not 0 <= index < batch.total or batch.seen[index]:
            return
        if status == b"503":
            batch.ack(index, _NoStream())
            return
        if data.startswith(b'{"stream":') and b'"error"' not in data:
            batch.ack(index, None)  # {"stream":...,"seq":...}: stored (the common ack, unparsed)
            return
        try:
            reply = json.loads(data)
        except ValueError as e:
            batch.ack(index, e)
            return
        error = reply.get("error") if isinstance(reply, dict) else None
        if error:
            batch.ack(index, _Refused(error.get("err_code"), error.get("description")))
        else:
            batch.ack(index, None)

    def _error(
        self,
        e: BaseException,
        at: int,
        total: int,
        refused: int = 0,
        holders: list[str] | None = None,
    ) -> SinkError:
        """`e`, met publishing message `at` of `total`, as the kind of `SinkError` it is."""
        where = f"NATS sink {self.url}, stream {self.stream!r}"
        count = f"{refused} of {total} messages refused" if refused else f"at message {at + 1}"
        kind: type[SinkError] = TransientSinkError
        fix = None
        if isinstance(e, _NoStream):
            why = f"no JetStream stream takes subjects {self.prefix}.> (deleted? JetStream off?)"
        elif isinstance(e, _Refused) and e.code in _FULL:
            why = f"{_FULL[e.code]} and discards new messages: {e.description}"
        elif isinstance(e, _Refused) and e.code == _WRONG_STREAM:
            others = [n for n in holders or () if n != self.stream]
            held = "stream " + ", ".join(repr(n) for n in others) if others else "another stream"
            why = f"{held} holds subjects {self.prefix}.>: {e.description}"
            kind, fix = (
                PermanentSinkError,
                (
                    "give the sink a ?prefix= no other stream takes, or relay into that stream "
                    "(?stream=), or delete it if it is a leftover (nats stream rm NAME)"
                ),
            )
        elif isinstance(e, _Refused):
            why = f"{e.description} (code {e.code})"
            kind = TransientSinkError if e.code in _PASSING else PermanentSinkError
        elif isinstance(e, self._nats.errors.MaxPayloadError):
            why = f"a message is larger than the server takes: {e}"
            kind = PermanentSinkError
            fix = "raise max_payload in the NATS server's configuration"
        elif isinstance(e, asyncio.TimeoutError):
            why = f"no publish ack within {self.timeout:g} s"
            if refused_access(*self._seen):
                why += f" after {self._seen[-1]!r}"
                kind = PermanentSinkError
                fix = f"allow the user to publish to {self.prefix}.> (and $JS.API.>)"
        else:
            why = repr(e)
        message = f"{where}: {why} ({count})"
        return PermanentSinkError(message, fix) if kind is PermanentSinkError else kind(message)


class _Acks:
    """The acks of one batch: counted, not a future each; `done` once all came."""

    def __init__(self, total: int, loop: asyncio.AbstractEventLoop) -> None:
        self.total = total
        self.count = 0
        self.seen = bytearray(total)
        self.failed: list[tuple[int, BaseException]] = []  # in the order they came
        self.done: asyncio.Future[None] = loop.create_future()

    def ack(self, index: int, error: BaseException | None) -> None:
        self.seen[index] = 1
        self.count += 1
        if error is not None:
            self.failed.append((index, error))
        if self.count == self.total and not self.done.done():
            self.done.set_result(None)


class _NoStream(Exception):
    """No JetStream stream listens on the subject (a 503 "no responders" status)."""


class _Refused(Exception):
    """JetStream answered a publish with an error (its API error code and text)."""

    def __init__(self, code: int | None, description: str | None) -> None:
        super().__init__(f"{description} (code {code})")
        self.code = code
        self.description = description


def _covers(pattern: str, subject: str) -> bool:
    """Whether every subject that `subject` (with wildcards) matches, `pattern` matches."""
    wanted = subject.split(".")
    tokens = pattern.split(".")
    for i, token in enumerate(tokens):
        if token == ">":
            return i < len(wanted)
        if i >= len(wanted) or wanted[i] == ">" or token not in ("*", wanted[i]):
            return False
    return len(tokens) == len(wanted)


def _parse(url: str) -> dict[str, str]:
    options, _, _ = query(url, "the NATS sink", ("nats", "tls"), _OPTIONS)
    parts = urlsplit(url)
    if not parts.hostname:
        raise ConfigError(f"{masked(url)}: no host; e.g. nats://127.0.0.1:4222")
    try:
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError as e:
        raise ConfigError(f"{masked(url)}: {e}") from e
    if parts.path not in ("", "/"):
        raise ConfigError(f"{masked(url)}: a NATS URL has no path; options go in ?stream=...")
    return options
