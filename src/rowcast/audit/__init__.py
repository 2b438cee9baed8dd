"""Revision tables for SQLAlchemy models, history and as-of queries, and audit of other writes.

::

    from rowcast.audit import Versioned, history, as_of, revert

    class Reservation(Versioned, Base):          # or: versioned(Reservation)
        __tablename__ = "reservations"
        ...                                      # Reservation.Revision -> reservations_rev

    history(session, Reservation, 1)             # every revision, oldest first
    as_of(session, Reservation, 1, when)         # the row at `when`, None if absent / deleted
    revert(session, revision)                    # bring the row back (even if deleted since)
    AuditSink(engine).connect(hub)               # revisions for raw SQL, seen by a log source

What a session writes, and when: every row change of a versioned table that
the session makes (flushed objects, cascades, ORM-enabled and Core
``session.execute(update(...))`` / ``delete(...)`` statements, and
``insert(...)`` statements whose rows name their primary keys) gets one
revision row, inserted with a Core statement on the session's connection in
the same transaction: right after the flush, once autoincrement keys and
server-side defaults are known (read back in the same transaction where the
session does not hold them), and right after a bulk statement. Writes and
updates store the new row; a delete stores ``rev_isdelete=True``, the key and
NULL elsewhere; an update that changes the primary key stores a delete of the
old key, then the new row; an update with no net change stores nothing. A rollback (of
the transaction or of a SAVEPOINT) leaves no revision. The revisions of one
transaction share ``rev_txid``; ``rev_created`` is UTC epoch seconds, strictly
increasing within a process. What the ORM capture cannot see (raw ``text()``
SQL, ``insert()`` rows that leave their key to the database, the legacy
``bulk_*_mappings``) warns with `rowcast.RowcastWarning` where it can and is
left to `AuditSink` with a log source.

Revisions are append-only: flushing a changed or deleted ``Model.Revision``,
or running an UPDATE / DELETE statement on a revision table through
SQLAlchemy, raises `AuditError`. (Raw SQL is for database privileges to
refuse: grant INSERT and SELECT only.)
"""

from ..errors import AuditError
from ._model import Versioned, versioned
from ._query import as_of, history, revert
from ._sink import AuditSink
from ._tables import Revision

__all__ = [
    "AuditError",
    "AuditSink",
    "Revision",
    "Versioned",
    "as_of",
    "history",
    "revert",
    "versioned",
]
