"""Extraction from a SQL source: the wrapped query, the bound mark, streaming, sorting, lookback.

- ``extract``: ``Source``, one SQLAlchemy database, and the rows after a mark;
- ``lookback``: moving a cursor value back by the lookback window.
"""
