"""A shaped row's upload bytes and its ledger hashes: the row encoders and the row hash schemes.

Pure: the compiled encoder turns a row's values into its JSON bytes (orjson) and its key and
payload hashes in one call, so the reading path touches each row once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import xxhash

#: The row hash of the datasets a store registers now: XXH3, 64 bits. Datasets registered before
#: state schema version 4 keep BLAKE2b, which their ledgers were written with (see
#: :meth:`aitems_sync.state.store.StateStore.row_hash_of`).
ROW_HASH = "xxh3-64"


def _blake2b_64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


def _xxh3_64(data: bytes) -> int:
    return int.from_bytes(xxhash.xxh3_64_digest(data), "big", signed=True)


_HASHERS: dict[str, Callable[[bytes], int]] = {"blake2b-64": _blake2b_64, ROW_HASH: _xxh3_64}
#: Every row hash a ledger may hold, by the name the state store records per dataset.
ROW_HASHES = tuple(_HASHERS)
#: The same hashes inline, as the compiled encoder writes them (its tests hold both equal).
_HASH_EXPRESSIONS = {
    "blake2b-64": "h(b2({data}, digest_size=8).digest(), 'little', signed=True)",
    ROW_HASH: "h(x3({data}), 'big', signed=True)",
}
_HASH_NAMES: dict[str, Any] = {"b2": hashlib.blake2b, "x3": xxhash.xxh3_64_digest,
                               "h": int.from_bytes}


def row_hash(data: bytes, scheme: str) -> int:
    """A signed 64-bit hash of encoded bytes (the ledger's key and payload hashes), by the
    dataset's row hash ``scheme`` (one of :data:`ROW_HASHES`).

    XXH3 is far cheaper on a typical row than BLAKE2b (whose call and digest object dominate),
    and every row is hashed twice (measured: docs/perf-history.md). Neither is a cryptographic
    commitment at 64 bits: collisions are a 2**-64 event per comparison, which we accept and
    document.
    """
    return _HASHERS[scheme](data)


def identity_hash(values: Sequence[Any], scheme: str) -> int:
    """The key hash of an interaction row with a key of its own: its key columns' values as
    read (an event id need not be a field), hashed by ``scheme``."""
    try:
        data = orjson.dumps(values, default=str)  # decimals, bytes
    except TypeError:  # an integer beyond 64 bits
        data = repr(tuple(values)).encode()
    return row_hash(data, scheme)


def encode_row(field_names: Sequence[str], values: Sequence[Any],
               key_positions: Sequence[int] | None, scheme: str) -> tuple[bytes, int, int]:
    """A shaped row's JSON (keys in schema order), its key hash and its payload hash (by the
    row hash ``scheme``).

    ``key_positions`` None means the whole row is the key (interactions): both hashes are the
    payload's.
    """
    # orjson hands back each result in a 4 KB allocation whatever its length. A row is kept
    # until its batch commits, so it is copied into a bytes of its own size: the copy costs
    # less than the page faults of the large allocations, and the window holds only each row's
    # own size.
    encoded = bytes(memoryview(orjson.dumps(dict(zip(field_names, values, strict=True)))))
    payload = row_hash(encoded, scheme)
    if key_positions is None:
        return encoded, payload, payload
    return encoded, row_hash(orjson.dumps([values[i] for i in key_positions]), scheme), payload


RowEncoder = Callable[[Sequence[Any]], tuple[bytes, int, int]]


def row_encoder(field_names: Sequence[str], key_positions: Sequence[int] | None,
                scheme: str) -> RowEncoder:
    """:func:`encode_row` for one dataset's fields, compiled once: the same bytes and hashes.

    The row's object is a dict display with the field names as constants, and the hashes are
    computed inline: cheaper per row than ``encode_row`` (measured: docs/perf-history.md), on
    the reading thread that bounds a backfill.
    The generated source holds only the names' ``repr``, positions and the hash's expression.
    """
    items = ", ".join(f"{name!r}: values[{i}]" for i, name in enumerate(field_names))
    expression = _HASH_EXPRESSIONS[scheme]
    if key_positions is None:
        key_hash = "payload"
    else:
        key = ", ".join(f"values[{i}]" for i in key_positions)
        key_hash = expression.format(data=f"dumps([{key}])")
    source = (
        "def encode(values):\n"
        f"    encoded = bytes(memoryview(dumps({{{items}}})))\n"
        f"    payload = {expression.format(data='encoded')}\n"
        f"    return encoded, {key_hash}, payload\n"
    )
    namespace: dict[str, Any] = {"dumps": orjson.dumps, **_HASH_NAMES}
    exec(source, namespace)  # built from field names (as repr) and positions only
    encode: RowEncoder = namespace["encode"]
    return encode
