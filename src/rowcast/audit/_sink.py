"""`AuditSink`: revision rows for writes made outside the ORM, from any source's Changes.

Private to `rowcast.audit`; see `AuditSink` for the contract.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, create_engine, select
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from .._url import masked
from ..change import Action, Change
from ..codec import dumps
from ..errors import ConfigError, SinkError
from ..hub import Hub
from ..sinks._dberrors import sink_error
from ..sinks.base import change_id
from ._clock import Clock
from ._latest import repeated
from ._tables import Audited, audited_model, audited_name, audited_rev_name

_CHUNK = 500


def _fingerprint(values: list[Any]) -> str:
    try:
        return dumps(values)
    except TypeError:  # a type the codec does not know: its repr is stable enough here
        return repr(values)


class AuditSink:
    """Write ``<table>_rev`` rows for the changes of versioned tables, from any source.

    A Hub subscriber (``sink.connect(hub)``) and a relay sink (`deliver`):
    each transaction of changes (binlog, logical replication, SQLite triggers)
    becomes revision rows in one database transaction on `engine` (an
    `Engine` or a URL): writes and updates store the new row, deletes the key
    with ``rev_isdelete=True``, and an update that changes the key a delete of
    the old key before the new row. ``rev_txid`` is the change's txid and
    ``rev_created`` its commit time, moved 1 us later where needed so that the
    revisions this sink writes keep their commit order. Changes of tables that
    are not versioned (by name, in the table's schema or, for a model without
    one, the engine's default schema) are ignored; `models` narrows the set.

    Not written twice, the rule: the ORM audits its own changes in their
    transaction, so

    * a change whose ``source`` is ``"sqlalchemy"`` (`SessionCapture`) is
      skipped: the session already wrote its revision;
    * in a transaction that also inserted ``<table>_rev`` rows (the ORM's
      revisions, seen by a log source), each such row vouches for one change
      of ``<table>`` with the same ``rev_isdelete`` and the same column
      values (the key, for a delete): that change is skipped. The source must
      therefore see the ``_rev`` tables too (do not filter them out of the
      binlog source's ``tables`` nor of the publication); changes of ``_rev``
      tables are never audited themselves.

    Snapshot reads (``Change(snapshot=True)``: an initial snapshot's rows, a
    backfill's, handed out again beside the stream) are what the row *is*, not
    something done to it: such a read adds a revision only when the row has none,
    its latest one is a delete, or its values differ (a row the audit missed: the
    read records what it is now). A read that repeats the latest revision adds
    nothing (counted in ``unchanged``), so a backfill makes no false revisions. The
    latest revisions are looked up once per table per transaction (a backfill's
    chunk), not per row.

    Re-delivery is idempotent: ``rev_id`` is the change's stable
    `rowcast.sinks.base.change_id` (when the source gives a position), and
    rows already stored are not inserted again. Database errors raise
    `SinkError` (a Hub receiver's error is logged and counted by the Hub).
    """

    def __init__(self, engine: Engine | str, models: Iterable[type] | None = None) -> None:
        if isinstance(engine, str):
            url = engine
            try:
                engine = create_engine(url)
            except (ArgumentError, NoSuchModuleError) as e:
                raise ConfigError(
                    f"AuditSink needs a SQLAlchemy engine or database URL, not {masked(url)!r}: {e}"
                ) from e
        if not isinstance(engine, Engine):
            raise ConfigError(f"AuditSink needs a SQLAlchemy Engine or a URL, not {engine!r}")
        self.engine = engine
        self.url = masked(engine.url.render_as_string(hide_password=False))
        self._only = None if models is None else frozenset(audited_model(m).table for m in models)
        self._clock = Clock()
        self._default: list[str | None] = []  # the engine's default schema, once known
        self._lock = threading.Lock()
        self._hubs: list[Hub] = []
        self.written = 0  # revision rows inserted so far
        self.skipped = 0  # changes already audited by the ORM
        self.unchanged = 0  # snapshot reads that repeated the row's latest revision

    # ---------------------------------------------------------------- wiring

    def connect(self, hub: Hub) -> AuditSink:
        """Audit every transaction `hub` publishes from now on; returns the sink."""
        hub.signal("commit").connect(self._on_commit, weak=False)
        self._hubs.append(hub)
        return self

    def disconnect(self, hub: Hub) -> None:
        """Stop auditing what `hub` publishes."""
        hub.signal("commit").disconnect(self._on_commit)
        if hub in self._hubs:
            self._hubs.remove(hub)

    def _on_commit(self, sender: Any, changes: Sequence[Change], **_: Any) -> None:
        self.write(changes)

    def check(self) -> None:
        """Connect to the database (the relay's `Sink` contract)."""
        try:
            with self.engine.connect():
                pass
        except SQLAlchemyError as e:
            raise sink_error(e, f"AuditSink cannot reach {self.url}: {e}") from e

    def deliver(self, batch: Sequence[Sequence[Change]]) -> None:
        """Write the revisions of whole transactions (the relay's `Sink` contract)."""
        for transaction in batch:
            self.write(transaction)

    def close(self) -> None:
        """Disconnect from every hub; the engine stays the caller's. Idempotent."""
        for hub in list(self._hubs):
            self.disconnect(hub)

    # ---------------------------------------------------------------- writing

    def write(self, changes: Sequence[Change]) -> int:
        """Write the revisions of one transaction; returns how many rows were inserted."""
        if not changes:
            return 0
        vouchers: Counter[tuple[Audited, str]] = Counter()
        todo: list[tuple[int, Audited, Change]] = []
        for index, change in enumerate(changes):
            if change.source == "sqlalchemy":
                self.skipped += 1
                continue
            audited, is_revision = self._resolve(change.schema, change.table)
            if audited is None:
                continue
            if is_revision:
                if change.action is Action.WRITE and change.after is not None:
                    deleted = bool(change.after.get("rev_isdelete"))
                    vouchers[_voucher(audited, deleted, change.after)] += 1
            else:
                todo.append((index, audited, change))
        rows: dict[Audited, list[dict[str, Any]]] = {}
        snapshots: set[str] = set()  # rev_id of the rows a snapshot read made
        for index, audited, change in todo:
            deleted = change.action is Action.DELETE
            image = change.before if deleted else change.after
            assert image is not None
            # an update that changed the key: the row is gone from its old key first
            old_key = (
                change.before
                if change.action is Action.UPDATE and audited.moved(change.before, image)
                else None
            )
            voucher = _voucher(audited, deleted, image)
            if vouchers[voucher]:
                vouchers[voucher] -= 1
                self.skipped += 1
                if old_key is not None:  # the ORM wrote the old key's delete beside it
                    gone = _voucher(audited, True, old_key)
                    if vouchers[gone]:
                        vouchers[gone] -= 1
                continue
            stable = change_id(change, index) if change.position else uuid.uuid4()
            rev_id = str(stable)
            if old_key is not None:
                gone_id = str(uuid.uuid5(stable, "moved"))
                created = self._clock.take(1, at=change.ts)
                rows.setdefault(audited, []).append(
                    audited.row(None, _coerce(audited, old_key), created, change.txid, gone_id)
                )
            created = self._clock.take(1, at=change.ts)
            if deleted:
                key = dict(image)
                if any(key.get(name) is None for name in audited.pk):
                    pk = change.pk if isinstance(change.pk, tuple) else (change.pk,)
                    key = dict(zip(audited.pk, pk, strict=False))
                row = audited.row(None, _coerce(audited, key), created, change.txid, rev_id)
            else:
                row = audited.row(_coerce(audited, image), None, created, change.txid, rev_id)
                if change.snapshot:
                    snapshots.add(rev_id)
            rows.setdefault(audited, []).append(row)
        return self._insert(rows, snapshots) if rows else 0

    def _insert(self, rows: Mapping[Audited, list[dict[str, Any]]], snapshots: set[str]) -> int:
        written = 0
        try:
            with self.engine.begin() as conn:
                for audited, batch in rows.items():
                    if snapshots:  # reads of rows whose latest revision holds them: no news
                        same = repeated(conn, audited, batch, snapshots)
                        if same:
                            self.unchanged += len(same)
                            batch = [row for row in batch if row["rev_id"] not in same]
                            if not batch:
                                continue
                    rev_id = audited.rev_table.c.rev_id
                    ids = [row["rev_id"] for row in batch]
                    stored: set[str] = set()
                    for start in range(0, len(ids), _CHUNK):
                        chunk = ids[start : start + _CHUNK]
                        stored.update(conn.scalars(select(rev_id).where(rev_id.in_(chunk))))
                    fresh = [row for row in batch if row["rev_id"] not in stored]
                    if fresh:
                        conn.execute(audited.insert, fresh)
                        written += len(fresh)
        except SQLAlchemyError as e:
            raise sink_error(e, f"AuditSink could not write revisions to {self.url}: {e}") from e
        self.written += written
        return written

    # ---------------------------------------------------------------- tables

    def _default_schema(self) -> str | None:
        if not self._default:
            try:
                with self.engine.connect():
                    pass
            except SQLAlchemyError as e:
                raise SinkError(f"AuditSink cannot reach {self.url}: {e}") from e
            self._default.append(self.engine.dialect.default_schema_name)
        return self._default[0]

    def _resolve(self, schema: str | None, table: str) -> tuple[Audited | None, bool]:
        """The versioned table a change is about, and whether it is its revision table."""
        for lookup, is_revision in ((audited_name, False), (audited_rev_name, True)):
            found = lookup(schema, table)
            if found is None and schema is not None:
                unqualified = lookup(None, table)  # a model without a schema: the default one
                if unqualified is not None and schema == self._default_schema():
                    found = unqualified
            if found is not None and (self._only is None or found.table in self._only):
                return found, is_revision
        return None, False


def _voucher(audited: Audited, deleted: bool, image: Mapping[str, Any]) -> tuple[Audited, str]:
    names = audited.pk if deleted else audited.columns
    return audited, _fingerprint([deleted, *(image.get(name) for name in names)])


_ISO_TEXT = (dt.datetime, dt.date, dt.time)  # fromisoformat reads what SQLite stores


def _coerce(audited: Audited, image: Mapping[str, Any]) -> Mapping[str, Any]:
    """Values a source decodes differently from the column type: MySQL TIME as timedelta;
    SQLite (whose images hold what it stored) DATE, TIME and DATETIME as ISO text."""
    fixed: dict[str, Any] | None = None
    for name in audited.columns:
        value = image.get(name)
        if isinstance(value, dt.timedelta) and _python_type(audited, name) is dt.time:
            fixed = dict(image) if fixed is None else fixed
            fixed[name] = (dt.datetime.min + value).time()
        elif isinstance(value, str) and (kind := _python_type(audited, name)) in _ISO_TEXT:
            try:
                parsed = kind.fromisoformat(value)
            except ValueError:  # not ISO text: the database driver may still take it
                continue
            fixed = dict(image) if fixed is None else fixed
            fixed[name] = parsed
    return image if fixed is None else fixed


def _python_type(audited: Audited, name: str) -> Any:
    try:
        return audited.table.c[name].type.python_type
    except NotImplementedError:
        return None
