"""One object written as a stream: gzip, then S3 multipart upload, with flat memory.

The file of a first load can be far larger than memory and than any temporary disk, so it is
never held whole: text goes through a gzip compressor into a part buffer, and each full part is
uploaded on a background thread while the next one fills (at most two parts in memory). Parts
start at 5 MiB (S3's minimum, except for the last) and double every 2,000 parts, so the
10,000-part limit is never met below about 300 GB compressed.

An upload that does not complete is aborted (NCP keeps, and bills, unfinished multipart
uploads until they are): on any exception, on ``abort()``, and, for one a killed process left
behind, by :func:`abort_unfinished` before the next upload of the same key.
"""

from __future__ import annotations

import logging
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

from aitems_sync.errors import ObjectStorageError

log = logging.getLogger(__name__)

MIB = 1024 * 1024
#: The first parts' size (S3's smallest: memory holds two), and how many parts are uploaded
#: before the size doubles.
PART_BYTES = 5 * MIB
PARTS_PER_DOUBLING = 2000
#: S3's limits: parts per upload, and the smallest part but the last.
MAX_PARTS = 10_000
MIN_PART_BYTES = 5 * MIB
#: zlib level of the bootstrap file: the cheapest; the compressor must keep up with the reader.
GZIP_LEVEL = 1


def part_size(part_number: int, first: int = PART_BYTES) -> int:
    """The size of part ``part_number`` (1-based)."""
    return first << ((part_number - 1) // PARTS_PER_DOUBLING)


class MultipartUpload:
    """Bytes written into one S3 object by multipart upload; use as a context manager.

    ``write`` fills parts, ``complete`` uploads the last one and completes the object. Leaving
    the context by an exception, or without ``complete``, aborts the upload.
    """

    def __init__(self, client: Any, bucket: str, key: str, *, first_part: int = PART_BYTES,
                 content_type: str = "application/gzip") -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self._first_part = max(first_part, MIN_PART_BYTES)
        self._buffer = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._pending: Future[dict[str, Any]] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="s3-part")
        self.bytes_written = 0
        self.upload_id: str = self._call(
            "start the upload of", client.create_multipart_upload, Bucket=bucket, Key=key,
            ContentType=content_type)["UploadId"]
        self._open = True

    def __enter__(self) -> MultipartUpload:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._open:
            self.abort()

    def write(self, data: bytes) -> None:
        """Add bytes; each full part is handed to the upload thread (after the previous one),
        so the buffer never holds more than a part however large ``data`` is."""
        self._buffer += data
        self.bytes_written += len(data)
        while len(self._buffer) >= (limit := self._next_part_size()):
            with memoryview(self._buffer) as view:
                part = bytes(view[:limit])  # one copy, for the upload thread
            del self._buffer[:limit]
            self._send(part)

    def _next_part_size(self) -> int:
        return part_size(len(self._parts) + 1 + (self._pending is not None), self._first_part)

    def complete(self) -> None:
        """Upload what is left as the last part and complete the object."""
        if self._buffer or (not self._parts and self._pending is None):
            self._send(bytes(self._buffer))
            self._buffer.clear()
        self._collect()
        self._call("complete the upload of", self.client.complete_multipart_upload,
                   Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                   MultipartUpload={"Parts": self._parts})
        self._open = False
        self._pool.shutdown()

    def abort(self) -> None:
        """Give the upload up: the parts sent are deleted, nothing is left billed."""
        self._open = False
        self._pool.shutdown(wait=True, cancel_futures=True)
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key,
                                               UploadId=self.upload_id)
        except Exception as error:  # reported; the next bootstrap aborts it again
            log.warning("could not abort the multipart upload of s3://%s/%s (%s); the next "
                        "bootstrap of this dataset aborts it", self.bucket, self.key,
                        _first_line(error), extra={"event": "abort_failed"})

    def _send(self, data: bytes) -> None:
        self._collect()
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise ObjectStorageError(
                f"s3://{self.bucket}/{self.key}: the file passed {MAX_PARTS} parts; split the "
                "dataset's first load (bootstrap --from files exported in several parts)")
        self._pending = self._pool.submit(self._upload_part, number, data)

    def _upload_part(self, number: int, data: bytes) -> dict[str, Any]:
        answer = self._call(f"upload part {number} of", self.client.upload_part,
                            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                            PartNumber=number, Body=data)
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def _collect(self) -> None:
        """Wait for the part in flight, if any, and record it (its error is raised here)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._parts.append(pending.result())

    def _call(self, what: str, method: Any, **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except Exception as error:  # reported; the next bootstrap aborts it again
            raise storage_error(f"could not {what} s3://{self.bucket}/{self.key}", error) from error


class GzipWriter:
    """Text in, gzip bytes out to a MultipartUpload (the ``.gz`` file AiTEMS reads)."""

    def __init__(self, upload: MultipartUpload, level: int = GZIP_LEVEL) -> None:
        self.upload = upload
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: a gzip header
        self.text_bytes = 0

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        self.text_bytes += len(data)
        compressed = self._compressor.compress(data)
        if compressed:
            self.upload.write(compressed)

    def close(self) -> None:
        """Flush the compressor (the gzip trailer); the caller then completes the upload."""
        self.upload.write(self._compressor.flush())


def abort_unfinished(client: Any, bucket: str, prefix: str) -> int:
    """Abort every unfinished multipart upload under ``prefix`` (a bootstrap killed mid-upload
    leaves one; everything under a dataset's prefix is its bootstraps'); the number aborted."""
    aborted = 0
    for upload in _unfinished(client, bucket, prefix):
        key = str(upload.get("Key", ""))
        if not key.startswith(prefix):
            continue
        try:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
        except Exception as error:
            raise storage_error(f"could not abort an unfinished upload of s3://{bucket}/{key}",
                                error) from error
        aborted += 1
    if aborted:
        log.info("aborted %d unfinished multipart upload(s) under s3://%s/%s left by an earlier "
                 "bootstrap", aborted, bucket, prefix, extra={"event": "aborted_leftover"})
    return aborted


def _unfinished(client: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every unfinished multipart upload under ``prefix``, page after page."""
    found: list[dict[str, Any]] = []
    markers: dict[str, str] = {}
    while True:
        try:
            answer = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix, **markers)
        except Exception as error:
            raise storage_error(
                f"could not list the unfinished uploads under s3://{bucket}/{prefix}",
                error) from error
        found += answer.get("Uploads", [])
        following = {"KeyMarker": answer.get("NextKeyMarker", ""),
                     "UploadIdMarker": answer.get("NextUploadIdMarker", "")}
        if not answer.get("IsTruncated") or following == markers:
            return found  # the last page (or a server that does not move on: no endless loop)
        markers = following


def storage_error(what: str, error: BaseException) -> ObjectStorageError:
    """An operator's message for a boto3/botocore failure: the S3 error code, or the network
    problem, and what to check."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code", "")
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        hint = _HINTS.get(str(code), "check the bucket, the key and the credentials")
        return ObjectStorageError(f"{what}: Object Storage answered {status} {code}; {hint}")
    return ObjectStorageError(
        f"{what}: {_first_line(error)}; check object_storage.endpoint and the network path")


_HINTS = {
    "AccessDenied": "check that the access key may write to the bucket (NCP answers "
                    "AccessDenied to checksum headers too: aitems-sync never sends them)",
    "NoSuchBucket": "create the bucket, or fix object_storage.bucket",
    "InvalidAccessKeyId": "check aitems.access_key (Object Storage takes the same keys)",
    "SignatureDoesNotMatch": "check aitems.secret_key and the machine's clock",
    "NoSuchUpload": "the upload was aborted meanwhile; run bootstrap again",
}


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
