"""Where a profiled run's time goes: py-spy's collapsed stacks summarised by pipeline stage.

    .venv/bin/python benchmarks/bench_backfill.py --table events --profile   # records
    .venv/bin/python benchmarks/bench_profile.py events [--top 25]             # summarises

(bench_noop.py and bench_delta.py take --profile too: profile-noop.txt, profile-delta-TABLE.txt.)

The recording has every thread, idle samples included (``py-spy record --idle --threads
--format raw``), so a thread's samples are its wall time. Each main-thread sample is put in the
first stage found walking its stack from the innermost frame out; a frame of our own code that
is the innermost one (its own time, including C calls such as orjson.dumps, which py-spy does
not show) is classified by the source line it was on. Upload threads are split into waiting for
the emulator's answer, waiting for work, and CPU spent in the HTTP client; the committer into
idle, merges, COMMIT and other statements; the lookup thread into idle and ledger lookups.
"""

from __future__ import annotations

import argparse
import linecache
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

from harness import DATA, ROOT

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")

# (stage, test on "function (file" of one frame); the first match from the innermost frame wins.
_MAIN_STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("start-up: imports", ("_find_and_load (",)),
    ("shape + validate (generated shape())", ("shape (<string>", "(aitems_sync/rows/coerce.py")),
    ("hash (blake2b, row_hash)", ("row_hash (",)),
    ("ledger lookup", ("ledger_lookup (",)),
    ("state: commit_batch (ledger upsert, mark, journal)", ("commit_batch (",)),
    ("state: journal_sending", ("journal_sending (",)),
    ("mark_of (a Mark per row)", ("mark_of (",)),
    ("batch builder (add/fits/cut)", ("BatchBuilder.",)),
    ("in-flight bookkeeping (_Inflight add/purge)", ("_Inflight.",)),
    ("waiting for uploads (future.result in _drain)", ("Future.result (",)),
    ("source fetch (SQLAlchemy + sqlite3)", ("_chunks (aitems_sync/source.py",)),
    ("extraction set-up (columns probe, SQL compile)", ("Source.extract (",)),
    ("spec load", ("load_spec (",)),
    ("state open + migrate", ("StateStore.open (", "open_state (")),
    ("ledger_size (count(*) of the dataset's ledger)", ("ledger_size (",)),
    ("run bookkeeping (leases, runs, leftovers)", (
        "Leases.", "begin_run (", "end_run (", "_report_leftovers (", "get_mark (")),
    ("shutdown (pool join, close)", ("ThreadPoolExecutor.shutdown (", "Source.close (",
                                     "StateStore.close (")),
]

# Own-time lines of our frames, by what the line does.
_LINE_STAGES: list[tuple[str, str]] = [
    ("orjson.dumps", "orjson + dict(zip) of the row (in _shape)"),
    ("_Row(", "per-row objects (_Row, LedgerEntry)"),
    ("LedgerEntry(", "per-row objects (_Row, LedgerEntry)"),
    ("self._shape(raw) for raw", "per-row loop overhead (_route)"),
]


def _frames(stack: str) -> list[tuple[str, str, int]]:
    """(function, file, line) from the outermost frame in."""
    frames = []
    for text in stack.split(";"):
        found = _FRAME.match(text)
        if found:
            frames.append((found["function"], found["file"], int(found["line"])))
    return frames


def _source_line(file: str, line: int) -> str:
    path = ROOT / file
    return linecache.getline(str(path), line).strip() if path.exists() else ""


def _main_stage(frames: list[tuple[str, str, int]]) -> str:
    if not any(function == "main" and file == "aitems_sync/cli.py" for function, file, _ in frames):
        return "start-up: imports" if frames else "start-up: interpreter"
    for function, file, _line in reversed(frames):
        key = f"{function} ({file}"
        for stage, tests in _MAIN_STAGES:
            if any(test in key for test in tests):
                return stage
    for function, file, line in reversed(frames):  # our innermost frame, by what it does
        if file.startswith("aitems_sync/"):
            text = _source_line(file, line)
            for needle, stage in _LINE_STAGES:
                if needle in text:
                    return stage
            return f"own time: {function} ({file})"
    function, file, _ = frames[-1]
    return f"other: {function} ({file})"


def _committer_stage(frames: list[tuple[str, str, int]]) -> str:
    functions = " ".join(f"{function} ({file}" for function, file, _ in frames)
    leaf = f"{frames[-1][0]} ({frames[-1][1]}" if frames else ""
    if "Condition.wait" in leaf or "wait (threading.py" in leaf:
        return "committer: idle, waiting for a batch or an answer"
    if "merge_ledger" in functions:
        return "committer: merging the ledger's log (statements and COMMIT)"
    if "do_commit" in leaf:
        return "committer: COMMIT (fsync)"
    if "LedgerLog.append" in functions:
        return "committer: ledger log append"
    if "commit_batches" in functions:
        return "committer: other statements of the transaction"
    return "committer: bookkeeping (Python)"


def _lookup_stage(frames: list[tuple[str, str, int]]) -> str:
    functions = " ".join(f"{function} ({file}" for function, file, _ in frames)
    if "ledger_lookup" in functions:
        return "lookup thread: the next chunk's ledger lookup"
    return "lookup thread: idle, waiting for a chunk"


def _upload_stage(frames: list[tuple[str, str, int]]) -> str:
    functions = [f"{function} ({file}" for function, file, _ in frames]
    leaf = functions[-1] if functions else ""
    if "_worker (concurrent/futures/thread.py" in " ".join(functions) and not any(
            "deliver (" in f for f in functions):
        return "upload threads: idle, waiting for a batch"
    if any(name in leaf for name in ("recv_into", "readinto", "readline", "_read_status")):
        return "upload threads: waiting for the emulator's answer"
    if any(name in leaf for name in ("sendall", "send (", "create_connection")):
        return "upload threads: sending"
    if any("sign" in f for f in functions):
        return "upload threads: CPU: signing"
    return "upload threads: CPU: HTTP client (requests, urllib3, body join)"


def summarise(path: Path) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """Samples per main-thread stage, per upload-, committer- and lookup-thread stage, and
    main-thread own-time lines."""
    main: Counter[str] = Counter()
    uploads: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    for record in path.read_text().splitlines():
        stack, _, count_text = record.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        thread, _, rest = stack.partition(";")
        frames = _frames(rest)
        if "upload-" in thread:
            uploads[_upload_stage(frames)] += count
        elif "commit-" in thread:
            uploads[_committer_stage(frames)] += count
        elif "lookup-" in thread:
            uploads[_lookup_stage(frames)] += count
        elif "lease-renewer" in thread:
            continue
        else:  # the main thread (named once threading has started)
            main[_main_stage(frames)] += count
            if frames:
                function, file, line = frames[-1]
                lines[f"{function} ({file}:{line}) {_source_line(file, line)[:60]}"] += count
    return main, uploads, lines


def report(path: Path, top: int) -> str:
    """The summary as text: percentages of the main thread's wall samples, then uploads."""
    main, uploads, lines = summarise(path)
    total = sum(main.values()) or 1
    out = [f"{path.name}: {total:,} main-thread samples (wall time, idle included)",
           "", "main thread, by stage                                         share"]
    out += [f"  {stage:<60} {count / total:6.1%}" for stage, count in main.most_common()]
    for kind in ("upload threads", "committer", "lookup thread"):
        stages = Counter({s: c for s, c in uploads.items() if s.startswith(kind)})
        kind_total = sum(stages.values()) or 1
        out += ["", f"{kind} ({kind_total:,} samples over all its threads)"]
        out += [f"  {stage:<60} {count / kind_total:6.1%}" for stage, count in stages.most_common()]
    out += ["", f"main thread, innermost frame (top {top})"]
    out += [f"  {count / total:6.1%}  {where}" for where, count in lines.most_common(top)]
    return "\n".join(out)


def profiler(name: str, rate: int = 250) -> tuple[str, ...]:
    """The py-spy command line that records a run into benchmarks/data/profile-NAME.txt."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists() and shutil.which("py-spy") is None:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return (str(spy if spy.exists() else "py-spy"), "record", "--idle", "--threads",
            "--rate", str(rate), "--format", "raw", "--output", str(DATA / f"profile-{name}.txt"),
            "--")


def summarise_profile(name: str) -> str:
    """Summarise profile-NAME.txt into profile-NAME-summary.txt at once (the source lines are
    read from the files as they are now, and others may be editing them); a line to print."""
    summary = DATA / f"profile-{name}-summary.txt"
    summary.write_text(report(DATA / f"profile-{name}.txt", top=30) + "\n")
    return f"  profile: {DATA / f'profile-{name}.txt'}, summary: {summary}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("name", help="reads benchmarks/data/profile-NAME.txt (NAME: events, items, "
                        "noop, delta-items, ...)")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(report(DATA / f"profile-{args.name}.txt", args.top))


if __name__ == "__main__":
    main()
