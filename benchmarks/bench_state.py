"""State store throughput: commit_batch and ledger lookups on SQLite (and PostgreSQL if given).

    .venv/bin/python benchmarks/bench_state.py [--commits N] [--per K] [--ledger M] [--url URL]

Each commit is what the engine does per acknowledged batch: journal the batch as ``sending``
(its own committed transaction), then ``commit_batch`` with K ledger entries (random 64-bit key
hashes) and a new mark. Reported: ledger rows/s over journal+commit, ms per commit, and the ms
to look up 1,000 keys (half present) in a ledger of M entries. Real files, synchronous=FULL.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aitems_sync.state.store import LedgerEntry, Mark, StateStore


def _hash(rng: random.Random) -> int:
    return rng.getrandbits(64) - 2**63


def bench(url: str, *, commits: int, per: int, ledger: int) -> None:
    """Print commit and lookup figures for the store at ``url``."""
    rng = random.Random(1)
    with StateStore.open(url) as store:
        present: list[int] = []
        for start in range(0, ledger, 10_000):  # the existing ledger, in big commits
            batch = [LedgerEntry(_hash(rng), 1, None) for _ in range(min(10_000, ledger - start))]
            present += [e.key_hash for e in batch]
            store.commit_batch("bench", run_id="fill", batch_id=None, ledger=batch, mark=None)
        work = [[LedgerEntry(_hash(rng), _hash(rng), float(i)) for i in range(per)]
                for _ in range(commits)]
        started = time.perf_counter()
        for n, entries in enumerate(work):
            batch_id = store.journal_sending("bench", "run", rows=per, first=None, last=None)
            store.commit_batch("bench", run_id="run", batch_id=batch_id, ledger=entries,
                               mark=Mark(cursor=n, key=(n,)))
        elapsed = time.perf_counter() - started
        keys = rng.sample(present, min(500, len(present)))
        keys += [_hash(rng) for _ in range(1000 - len(keys))]
        lookups = 50
        started = time.perf_counter()
        for _ in range(lookups):
            found = store.ledger_lookup("bench", keys)
        lookup_ms = (time.perf_counter() - started) / lookups * 1000
        name = store.url_for_display.split(":", 1)[0]
    print(f"{name}: commit_batch with {per:,} ledger entries: "
          f"{commits * per / elapsed:,.0f} rows/s, {elapsed / commits * 1000:.1f} ms per commit "
          f"(journal + commit); lookup of 1,000 keys in a {ledger + commits * per:,}-entry "
          f"ledger: {lookup_ms:.1f} ms ({len(found)} found)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=100)
    parser.add_argument("--per", type=int, default=1000)
    parser.add_argument("--ledger", type=int, default=200_000)
    parser.add_argument("--url", help="also measure this store (e.g. a PostgreSQL database)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench(f"sqlite:///{tmp}/bench.db", commits=args.commits, per=args.per, ledger=args.ledger)
    if args.url:
        bench(args.url, commits=args.commits, per=args.per, ledger=args.ledger)


if __name__ == "__main__":
    main()
