"""Entry point for ``python -m aitems_sync``."""

from aitems_sync.cli.main import main

main()
