"""The ``rowcast`` command.

Each sub-command is a thin shell over the library: it parses options, opens
what the URLs name, and prints with rich (`rowcast.cli.console`). One module
per command family, each defining its command and importing nothing of the
others but `common` and the displays; they all join the `main` group
(`rowcast.cli.group`) here, and only here, so no module imports one that
imports it back. A `RowcastError` ends any command with ``error: <message>``
on stderr and exit status 2.
"""

from __future__ import annotations

from . import (
    backfill,
    config,
    consume,
    demo,
    dlq,
    doctor,
    events,
    relay,
    status,
    tail,
    ui,
    uninstall,
)
from .group import main

__all__ = ["main"]

main.add_command(demo.demo)
main.add_command(tail.tail)
main.add_command(doctor.doctor)
main.add_command(events.events)
main.add_command(relay.relay)
main.add_command(consume.consume)
main.add_command(status.status)
main.add_command(dlq.dlq)
main.add_command(uninstall.uninstall)
main.add_command(backfill.backfill)
main.add_command(config.config)
main.add_command(ui.ui)
