"""A backend whose driver is not installed: importing it fails as a missing extra would."""

import rowcast_test_driver_that_is_not_installed  # noqa: F401


class NoDriverSink:
    """Never built: its module cannot be imported."""
