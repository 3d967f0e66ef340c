"""Reading the files a spec refers to: regular files of bounded size, never a FIFO or a device
(a spec naming /dev/zero or a pipe must get an answer, not exhaust memory or wait for ever)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

#: The largest ``${file:}`` content (a key, a password, a certificate), and the largest
#: json_schema file.
MAX_FILE_BYTES = 256 * 1024


class NotASmallFile(Exception):
    """The path is not a regular file, or is larger than allowed (the message says which)."""


def read_small_file(path: Path, limit: int) -> bytes:
    """A regular file's bytes, at most ``limit`` of them. A FIFO or a device is never read
    (opened without blocking and refused), nor more than ``limit + 1`` bytes of anything."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        if not stat.S_ISREG(info.st_mode):
            raise NotASmallFile("is not a regular file (a pipe, a socket or a device)")
        with os.fdopen(os.dup(fd), "rb") as stream:
            data = stream.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise NotASmallFile(f"is larger than {limit // 1024} KiB")
    return data
