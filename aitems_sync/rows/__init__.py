"""Rows: shaping to the AiTEMS fields, coercion, the generated JSON Schema, validation, encoding
and row hashes. Pure: no database, network or clock.

- ``shape``: ``Shaper``, result columns to typed field values, and the verdict on them;
- ``coerce``: the coercion table (docs/coercion.md);
- ``schema``: the JSON Schema generated from the fields, and the user's ``json_schema``;
- ``encode``: a row's upload bytes and its ledger hashes.
"""
