"""`AsyncEventStoreContract`: what every `rowcast.store.aio.AsyncEventStore` must do.

The async twin of `rowcast.testing.store.EventStoreContract`: the core
semantics again, through the async API, plus what only the async side has
(order of calls, a loop never blocked, watches and subscriptions ended by
``aclose`` or cancellation). Subclass it and override `make_store` (and
`shared_url` when another instance can open the same data)::

    class TestAsyncSQLiteFile(AsyncEventStoreContract):
        @pytest.fixture(autouse=True)
        def _dir(self, tmp_path):
            self.url = f"sqlite:///{tmp_path}/events.db"

        def make_store(self):
            return AsyncEventStore(self.url)

        def shared_url(self):
            return self.url

Each test is a plain function that runs its body with `asyncio.run` (no
pytest plugin needed): the body gets a fresh store, and `open_store` makes
more, all closed when the body ends. Each body has `TIMEOUT` seconds.

The suite is one class made of one mixin per concern, each in its own module:
appends (`_appends`), reads (`_reads`), deletes, snapshots and closing
(`_streams`), `watch` (`_watch`) and `subscribe` (`_subscriptions`); `_base`
holds the hooks and the runner they share.
"""

from __future__ import annotations

from ._appends import AsyncAppendTests
from ._base import collect
from ._reads import AsyncReadTests
from ._streams import AsyncStreamTests
from ._subscriptions import AsyncSubscriptionTests
from ._watch import AsyncWatchTests

__all__ = ["AsyncEventStoreContract", "collect"]


class AsyncEventStoreContract(
    AsyncAppendTests,
    AsyncReadTests,
    AsyncStreamTests,
    AsyncWatchTests,
    AsyncSubscriptionTests,
):
    """The behaviour every async event store shares; see `rowcast.store.aio`."""
