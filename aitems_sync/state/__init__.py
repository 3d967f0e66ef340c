"""The state store: one database (SQLite by default) holding the marks, the ledger (its log and
levels), the batch journal, the quarantine, the runs and the leases.

- ``store``: ``StateStore``, every read and write a run makes;
- ``records``: the values the store takes and returns;
- ``values``: the typed codec for cursor values and marks;
- ``connect``: opening the database: SQLite pragmas, pools, dialect upserts;
- ``tables``: the tables, the schema version and the forward migrations.
"""
