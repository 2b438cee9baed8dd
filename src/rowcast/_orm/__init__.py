"""The SQLAlchemy ORM row capture, shared by the session source and the audit.

Private. `rowcast.sources.sqlalchemy` (``SessionCapture``, the outbox) and
`rowcast.audit` (revision rows written in the session's own transaction) both
need the rows each flush and each bulk statement writes, as whole before and
after images; this package records them, so that neither imports the other:

* `rows`: how a mapped object or a table row becomes a ``{column: value}``
  image, and how values only the database knows are fetched afterwards;
* `state`: what a capture holds in each session (``session.info``), by
  savepoint, and how it warns;
* `flush`: the mapper events that record what a flush writes;
* `bulk`: the capture of INSERT / UPDATE / DELETE run through
  ``session.execute()``.
"""
