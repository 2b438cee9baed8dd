"""`EventStoreContract`: what every `rowcast.store.EventStore` backend must do.

Subclass it in a test module and override `make_store` (and `shared_url` when
another instance, or another process, can open the same data)::

    class TestSQLiteFile(EventStoreContract):
        @pytest.fixture(autouse=True)
        def _dir(self, tmp_path):
            self.url = f"sqlite:///{tmp_path}/events.db"

        def make_store(self):
            return EventStore(self.url)

        def shared_url(self):
            return self.url

Tests use ``self.store`` (made before each test, closed after) and
`open_store` for more instances; stream names are unique per test, so a
backend on a shared server needs no cleanup between tests. The tests that need
a second instance or other processes skip when `shared_url` is None.

The suite is one class made of one mixin per concern, each in its own module:
appends (`_appends`), reads (`_reads`), refused arguments (`_arguments`),
deletes, snapshots and closing (`_streams`), racing writers (`_concurrency`),
`watch` (`_watch`) and `subscribe` (`_subscriptions`); `_base` holds the hooks,
the fixture and the helpers they share.
"""

from __future__ import annotations

from ._appends import AppendTests
from ._arguments import ArgumentTests
from ._base import RICH_DATA, events
from ._concurrency import ConcurrencyTests
from ._reads import ReadTests
from ._streams import StreamTests
from ._subscriptions import SubscriptionTests
from ._watch import WatchTests

__all__ = ["RICH_DATA", "EventStoreContract", "events"]


class EventStoreContract(
    AppendTests,
    ReadTests,
    ArgumentTests,
    StreamTests,
    ConcurrencyTests,
    WatchTests,
    SubscriptionTests,
):
    """The behaviour every event store backend shares; see `rowcast.store.base`."""
