"""A starter spec and emulator seed from a database's tables (``aitems-sync init``).

- ``create``: :func:`create_starter` reads the tables and writes the two files; :class:`InitReport`;
- ``catalog``: the tables as the inspector reports them (the hand-off to the decisions);
- ``mapping``, ``choose``, ``draft``, ``names``, ``render``: the pure decisions and the text.
"""
