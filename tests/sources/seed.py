"""The seed workload every log source must turn into the same 13 changes.

It lives with `rowcast.testing.source.SourceContract`, which runs it on every log source.
"""

from rowcast.testing.source import SEED, SEED_BY_STATEMENT, SEED_EVENTS, events

__all__ = ["SEED", "SEED_BY_STATEMENT", "SEED_EVENTS", "events"]
