"""Tests of `rowcast.consume` against the real brokers (skipped when absent, not in CI)."""
