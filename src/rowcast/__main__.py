"""``python -m rowcast``: the same command as ``rowcast``."""

from .cli import main

main()
