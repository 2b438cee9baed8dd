"""The transactional outbox: changes written in the app's own transaction, relayed later.

::

    capture = SessionCapture(Session, hub=hub, outbox=True)     # in the app
    source = open_source("outbox+postgresql://app@db/shop")    # in the relay
    for transaction in source: ...                             # or source.run(hub)

`SessionCapture` with ``outbox=True`` inserts one row per captured change into
the table ``rowcast_outbox`` of the same database, in the same transaction, at
the end of each flush (and after each captured bulk statement). The database
keeps what a transaction keeps: a rollback drops its rows, rolling back a
SAVEPOINT drops the rows written inside it, and a commit makes every row of the
transaction visible at once. An app killed right after ``commit()`` returns has
lost nothing: its changes wait in the outbox.

A row holds ``id`` (the outbox sequence, from an auto-increment that is never
reused: ``AUTOINCREMENT`` on SQLite, ``BIGSERIAL``-like identity on PostgreSQL,
InnoDB's counter, which MariaDB 10.2.4+ and MySQL 8 keep across restarts),
``txid`` (the capture's transaction id, also the Changes' ``txid``), ``idx``
(the change's place in its transaction) and ``body`` (``Change.to_json()``; the
change's ``ts`` is the time of the flush that wrote it: the commit time is not
known before the commit). `OUTBOX` is the table, to add to an Alembic
``MetaData`` with ``OUTBOX.to_metadata(metadata)``; `create_table` creates it;
both sides also create it when it is missing.

`OutboxSource` reads the outbox as a queue, not a log:

* Transactions come out whole, in the order of their ``position``: the largest
  outbox id of the transaction, as a string (``"1042"``). Two transactions that
  wrote the same row come out in commit order (the second waited for the first's
  row lock before writing its outbox rows, so its ids are larger). Transactions
  that touched different rows may come out in another order than they committed
  (ids are handed out at insert time, not at commit), which is why rows are
  removed by id, never "everything below a position": a transaction that commits
  late with smaller ids is still relayed.
* Every row still in the outbox is pending: ``start`` may be ``"now"``,
  ``"start"`` (both: everything in the outbox) or a position a consumer saved
  after delivering that transaction, whose rows are then removed first.
* A transaction's rows are deleted once the consumer moved past it: with
  ``checkpoint=``, when the checkpoint holds its position or a later one (checked
  before every read: a relay saves its checkpoint after delivery); otherwise when
  the consumer asks for the next transaction (``for tx in source`` and `run`
  handle a transaction before asking for the next), and whenever `ack` is called.
  A crash between delivery and deletion delivers the transaction again, with the
  same position, so ``change_id`` (sinks) is the same and deduplicating sinks
  keep it once. Nothing is deleted before the consumer is done with it. This
  holds with a Kafka exactly-once checkpoint too: the deletion is not part of the
  Kafka transaction (`OutboxSource.redelivers`; the relay warns).
* When the outbox is empty it polls every ``poll`` seconds (0.2 by default): SQL
  has no portable push, so an idle relay costs one indexed ``SELECT`` per poll
  and a change waits at most that long. `stop` ends the wait at once.
* One consumer per outbox table: two relays would both deliver every row.
* A lost connection or a restarting server is retried with backoff; a table that
  cannot be read (dropped, no privilege) is a `SourceError`, a bad URL or an
  unreachable server at start a `ConfigError`.
"""

from .source import OUTBOX, OutboxSource, create_table, diagnose, write

__all__ = ["OUTBOX", "OutboxSource", "create_table", "diagnose", "write"]
