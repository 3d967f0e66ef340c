"""Extraction in a worker process: read and prepare a dataset's rows off the main process's GIL.

A large extraction is read, shaped, validated, encoded and hashed (:mod:`aitems_sync.sync.prepare`)
in a child process, ``python -m aitems_sync.sync.worker``, which hands the prepared chunks to
the dataset's reading thread over a pipe. The main process keeps every decision: the ledger
diff, the batches, the uploads and the commits. The worker only reads, so killing it at any
moment loses nothing; the main process closes it when the dataset is done, stops or fails.

Why a process: with the reading thread, the committer and the upload threads sharing one
interpreter lock, a large backfill was bound to one core with the second core mostly idle
(benchmarks/README.md). The worker costs a Python start-up on the other core, so the
reading thread starts in-process and hands over once it has read ``worker_after`` rows, at a
chunk boundary, as soon as the worker is ready: the worker then reads the rows strictly after
the last one read in-process, in the same order, as a next run would.

The protocol, one pickled message per frame (an 8-byte length, then the pickle; both ends are
this package, so nothing untrusted is unpickled):

- main -> worker: ``Setup`` at once; then ``Start`` when it hands over (or the pipe closes);
- worker -> main: ``"ready"`` (source connected, shaping compiled), then ``Prepared`` chunks,
  then ``"end"``; or an ``AitemsSyncError`` (a source error, as the reading thread would raise
  it) in place of anything, after which the worker exits.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import select
import signal
import site
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from aitems_sync.errors import AitemsSyncError, SourceError
from aitems_sync.source.extract import Source
from aitems_sync.spec.model import DatasetSpec, SourceConfig
from aitems_sync.state.marks import Mark
from aitems_sync.sync.prepare import Layout, Prepared, Preparer

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">Q")
#: Bytes a pipe holds (Linux F_SETPIPE_SZ, the unprivileged maximum): a whole prepared chunk
#: fits, so the worker writes it and goes on reading while the main process routes the last.
PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = 1031
READY = "ready"
END = "end"


@dataclass(frozen=True)
class Setup:
    """What the worker needs before it can read: the source, the dataset and the layout."""

    source: SourceConfig
    dataset: DatasetSpec
    layout: Layout
    row_hash: str
    chunk_rows: int


@dataclass(frozen=True)
class Start:
    """Read the rows after ``mark`` (all of them when None), with ``lookback``; ``sort`` and
    ``inclusive`` as ``Source.extract`` takes them (sort True: the run reads the whole table,
    what is left is most of it; None: counts decide)."""

    mark: Mark | None
    lookback: timedelta = timedelta(0)
    sort: bool | None = False
    inclusive: bool = False


# -- the main process's side -----------------------------------------------------------------


class ExtractWorker:
    """A worker process for one dataset's extraction; use as a context manager."""

    def __init__(self, source: SourceConfig, dataset: DatasetSpec, layout: Layout,
                 row_hash: str, chunk_rows: int) -> None:
        # The spec keeps the user's json_schema read-only (a mappingproxy): a plain dict pickles.
        schema = None if dataset.json_schema is None else dict(dataset.json_schema)
        setup = Setup(source, replace(dataset, json_schema=schema), layout, row_hash, chunk_rows)
        self.dataset = dataset.name
        self._process = subprocess.Popen(
            [sys.executable, "-m", "aitems_sync.sync.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, env=_worker_env(),
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._to: IO[bytes] = self._process.stdin
        self._from: IO[bytes] = self._process.stdout
        _widen(self._to)
        _widen(self._from)
        self._ready = False
        self._failed = False
        self._send(setup)

    def __enter__(self) -> ExtractWorker:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def ready(self, timeout: float = 0.0) -> bool:
        """Whether the worker can take over now; waits up to ``timeout`` seconds for it.

        A worker that failed to start is never ready (the reading thread keeps the extraction):
        its error is logged as a warning.
        """
        if self._ready or self._failed:
            return self._ready
        readable, _, _ = select.select([self._from], [], [], timeout)
        if not readable:
            return False
        try:
            message = self._receive()
        except _Exited as exited:
            message = f"it exited ({exited}) before it was ready; its error is in the log above"
        except SourceError as error:
            message = str(error)
        if message == READY:
            self._ready = True
        else:
            self._failed = True
            log.warning("dataset %s: the extraction worker did not start: %s; the rows are "
                        "read in the main process", self.dataset, message,
                        extra={"event": "worker_unavailable", "dataset": self.dataset})
        return self._ready

    def chunks(self, start: Start) -> Iterator[Prepared]:
        """Hand the extraction over from ``start``: the prepared chunks, in order. Raises the
        source's error as the reading thread would have (SourceError), or a SourceError when
        the worker dies."""
        if not self._ready:
            raise RuntimeError("the extraction worker is not ready")
        self._send(start)
        while True:
            try:
                message = self._receive()
            except _Exited as exited:
                raise SourceError(
                    f"dataset {self.dataset}: the extraction worker process exited ({exited}) "
                    "before the end of the rows; the mark stays at the last batch delivered: "
                    "run again (the worker's own error, if any, is in the log above)"
                ) from None
            if message == END:
                return
            if not isinstance(message, Prepared):
                raise SourceError(f"the extraction worker sent {type(message).__name__}")
            yield message

    def close(self) -> None:
        """Stop the worker, wherever it is, and reap it. It only reads: nothing is lost."""
        with contextlib.suppress(OSError):
            self._to.close()
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        with contextlib.suppress(OSError):
            self._from.close()

    def _send(self, message: object) -> None:
        with contextlib.suppress(BrokenPipeError):  # it died: the next _receive says how
            _write(self._to, message)

    def _receive(self) -> object:
        try:
            message = _read(self._from)
        except EOFError:
            raise _Exited(_exit(self._process.wait())) from None
        if isinstance(message, AitemsSyncError):
            raise message
        return message


class _Exited(Exception):
    """The worker's pipe closed: it exited (the message says how)."""


def _worker_env() -> dict[str, str]:
    """The environment, with this package importable by the worker: as it is when installed
    in site-packages; from a checkout (tests, an editable install), by its directory on
    PYTHONPATH (never site-packages there: it would come before the standard library)."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[2])
    if here in {str(Path(p).resolve()) for p in site.getsitepackages()}:
        return env
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = here if not path else here + os.pathsep + path
    return env


def _widen(pipe: IO[bytes]) -> None:
    """Let the pipe hold a whole chunk, where the OS allows (Linux); a smaller pipe works too."""
    with contextlib.suppress(OSError, AttributeError):
        import fcntl

        fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, PIPE_BYTES)


def _read_exact(pipe: IO[bytes], size: int) -> bytearray:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        read = pipe.readinto(view[got:])  # type: ignore[attr-defined]
        if not read:
            raise EOFError
        got += read
    return buffer


def _exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


# -- the worker's side -------------------------------------------------------------------------


USAGE = """usage: python -m aitems_sync.sync.worker

The extraction worker of `aitems-sync run --extract-worker`: started by the run itself, it serves
one extraction over stdin and stdout (pickled frames) and is not meant to be started by hand.
"""


def main(argv: list[str] | None = None) -> int:
    """Serve one extraction on stdin/stdout (see the module docstring)."""
    if set(sys.argv[1:] if argv is None else argv) & {"-h", "--help"}:
        print(USAGE, end="")
        return 0
    # The main process decides when to stop (a signal reaches the whole process group): the
    # worker ends when its pipe closes, or is killed. It only reads, so nothing is lost.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames goes to the pipe
    try:
        _serve(requests, replies)
    except (BrokenPipeError, EOFError):
        return 0  # the main process is done with us
    except AitemsSyncError as error:  # sent as a SourceError: every subclass pickles like it
        with contextlib.suppress(BrokenPipeError):
            _write(replies, SourceError(error.message))
        return 0
    return 0


def _serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    setup = _read(requests)
    assert isinstance(setup, Setup)
    source = Source(setup.source)
    preparer = Preparer(setup.dataset, setup.layout, source.timezone, setup.row_hash)
    source.columns(setup.dataset.query)  # connect now: the handover then costs only the query
    gc.freeze()  # the imports' objects: the collector's generations hold only rows from here on
    _write(replies, READY)
    start = _read(requests)
    assert isinstance(start, Start)
    dataset = setup.dataset
    with source.extract(dataset.query, cursor=dataset.cursor, key=dataset.key_fields,
                        mark=start.mark, lookback=start.lookback,
                        chunk_rows=setup.chunk_rows, sort=start.sort,
                        inclusive=start.inclusive) as extraction:
        if tuple(extraction.columns) != setup.layout.columns:
            raise SourceError(
                f"dataset {dataset.name}: the query's result columns changed during the run "
                f"(now {', '.join(extraction.columns)}); run again"
            )
        for chunk in extraction.chunks:
            _write(replies, preparer.prepare(chunk))
            del chunk  # not kept while the next one is read (as DatasetSync._prepared)
    _write(replies, END)


def _read(pipe: IO[bytes]) -> Any:
    """One message: its frame, unpickled (EOFError if the pipe closes first)."""
    header = _read_exact(pipe, _HEADER.size)
    return pickle.loads(_read_exact(pipe, _HEADER.unpack(header)[0]))


def _write(pipe: IO[bytes], message: object) -> None:
    """One message, framed. An unbuffered pipe may take part of a write (a signal arrives):
    the rest is written until all of it went."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[pipe.write(view):]
    pipe.flush()


def _die_with_parent() -> None:
    """Linux: be killed when the main process dies (SIGKILL included), even mid-query.

    Strictly, when the thread that started it ends: the dataset's thread, which closes the
    worker before it moves on anyway."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


if __name__ == "__main__":
    # Run from the module imported by its name, not from __main__: the messages' classes must
    # be the ones the main process pickles (aitems_sync.sync.worker.Setup, not __main__.Setup).
    from aitems_sync.sync import worker

    sys.exit(worker.main())
