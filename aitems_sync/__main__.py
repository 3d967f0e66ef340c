"""Entry point for ``python -m aitems_sync``."""

from aitems_sync.cli import main

main()
