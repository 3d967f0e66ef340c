"""The command line: parse, call :mod:`aitems_sync.commands`, render. The only place that exits,
installs signal handlers or sets up logging.

- ``main``: the group, the global options, ``validate``, ``run``, ``plan``, ``emulator``;
- ``admin``: ``state``, ``quarantine``, ``history``, ``schema``;
- ``render``, ``progress``, ``logfmt``: what a person or a machine reads.
"""
