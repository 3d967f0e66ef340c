"""The bootstrap file's way to Object Storage, against a real S3 server on loopback (moto's
server mode, checking SigV4 signatures): a gzip CSV streamed by multipart upload in parts, read
back equal; an upload that fails or is given up leaves no multipart upload behind; a key pair
Object Storage refuses is an operator error that names the likely cause; the client never sends
the checksum headers NCP refuses (a proxy that answers them with 403, as NCP has been seen to,
proves it)."""

from __future__ import annotations

import csv
import gzip
import http.client
import io
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from aitems_sync.errors import ObjectStorageError
from aitems_sync.objectstorage.client import s3_client
from aitems_sync.objectstorage.upload import (
    MIB,
    GzipWriter,
    MultipartUpload,
    abort_unfinished,
    part_size,
)
from aitems_sync.rows.csvfile import CsvEncoder
from tests.conftest import S3Server

BUCKET = "aitems-boot"
REGION = "kr-standard"


class _RefusesChecksums(BaseHTTPRequestHandler):
    """Forwards to moto, but answers 403 AccessDenied to a request with checksum headers."""

    target: tuple[str, int] = ("127.0.0.1", 0)
    refused: ClassVar[list[str]] = []

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        sent = [h for h in self.headers if h.lower().startswith(("x-amz-checksum-",
                                                                 "x-amz-sdk-checksum"))]
        if sent:
            type(self).refused.append(f"{self.command} {self.path}: {sent}")
            error = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
            self.send_response(403)
            self.send_header("Content-Length", str(len(error)))
            self.end_headers()
            self.wfile.write(error)
            return
        conn = http.client.HTTPConnection(*type(self).target)
        conn.request(self.command, self.path, body=body, headers=dict(self.headers))
        answer = conn.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def endpoint(s3_server: S3Server) -> Iterator[str]:
    """moto behind the proxy that refuses checksum headers, as NCP does."""
    host, port = s3_server.url.removeprefix("http://").split(":")
    _RefusesChecksums.target = (host, int(port))
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _RefusesChecksums)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    s3_server.client(REGION).create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    yield f"http://127.0.0.1:{proxy.server_address[1]}"
    proxy.shutdown()


@pytest.fixture
def client(endpoint: str, s3_server: S3Server) -> Any:
    _RefusesChecksums.refused.clear()
    yield s3_client(endpoint, REGION, s3_server.access_key, s3_server.secret_key)
    assert _RefusesChecksums.refused == []  # no request carried a checksum header


def _unfinished(client: Any, prefix: str) -> list[str]:
    answer = client.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix)
    return [u["UploadId"] for u in answer.get("Uploads", []) if u["Key"].startswith(prefix)]


def test_a_gzip_csv_streamed_in_parts_reads_back_equal(client: Any) -> None:
    rows = [(f"u{n}", f"item,{n}" if n % 7 else f'say "{n}"', 1_700_000_000 + n,
             None if n % 5 == 0 else n % 2 == 0) for n in range(120_000)]
    encoder = CsvEncoder(["USER_ID", "ITEM_ID", "TIMESTAMP", "LIKED"],
                         [["string"], ["string"], ["long"], ["boolean", "null"]])
    random.seed(7)  # text that does not compress, so the file takes several parts
    noise = [(f"u{n}", "".join(random.choices("abcdefghijklmnopqrstuvwxyz", k=120)), n, None)
             for n in range(60_000)]
    key = "boot/users.csv.gz"
    with MultipartUpload(client, BUCKET, key, first_part=5 * MIB) as upload:
        gz = GzipWriter(upload)
        gz.write(encoder.header)
        for start in range(0, len(rows), 5000):
            gz.write(encoder.encode(rows[start:start + 5000]))
        gz.write(encoder.encode(noise))
        gz.close()
        upload.complete()
        parts = len(upload._parts)

    body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    text = gzip.decompress(body).decode("utf-8")
    read = list(csv.reader(io.StringIO(text, newline="")))
    assert parts >= 2
    assert read[0] == ["USER_ID", "ITEM_ID", "TIMESTAMP", "LIKED"]
    expected = [[u, i, str(t), "" if liked is None else str(liked).lower()]
                for u, i, t, liked in rows + noise]
    assert read[1:] == expected
    assert text.startswith("USER_ID,ITEM_ID,TIMESTAMP,LIKED\r\n\"u0\",")
    assert _unfinished(client, key) == []


def test_a_large_write_is_cut_into_parts_at_once(client: Any) -> None:
    """One write of several parts' worth (a chunk of long texts) leaves at most a part behind:
    memory stays flat whatever the writes' sizes."""
    key = "boot/large-writes.bin"
    data = bytes(range(256)) * (4096 * 13)  # 13 MiB
    with MultipartUpload(client, BUCKET, key, first_part=5 * MIB) as upload:
        for _ in range(3):
            upload.write(data)
            assert len(upload._buffer) < 5 * MIB
        upload.complete()

    assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data * 3


def test_an_empty_file_is_one_empty_part(client: Any) -> None:
    with MultipartUpload(client, BUCKET, "boot/empty.csv") as upload:
        upload.complete()

    assert client.get_object(Bucket=BUCKET, Key="boot/empty.csv")["Body"].read() == b""


def test_an_upload_left_by_an_exception_is_aborted(client: Any) -> None:
    key = "boot/broken.csv.gz"
    with pytest.raises(RuntimeError), MultipartUpload(client, BUCKET, key) as upload:
        upload.write(b"x" * (6 * MIB))  # one part on its way
        raise RuntimeError("the source failed")

    assert _unfinished(client, key) == []
    assert "Contents" not in client.list_objects_v2(Bucket=BUCKET, Prefix=key)


def test_uploads_a_killed_process_left_are_aborted_before_the_next(client: Any) -> None:
    prefix = "boot/killed/"
    client.create_multipart_upload(Bucket=BUCKET, Key=prefix + "run1.csv.gz")  # kill -9 left
    client.create_multipart_upload(Bucket=BUCKET, Key=prefix + "run2.csv.gz")
    client.create_multipart_upload(Bucket=BUCKET, Key="boot/other/run1.csv.gz")  # not ours

    assert abort_unfinished(client, BUCKET, prefix) == 2
    assert _unfinished(client, prefix) == []
    assert len(_unfinished(client, "boot/other/")) == 1


def test_a_missing_bucket_is_an_operator_error(client: Any) -> None:

    with pytest.raises(ObjectStorageError) as failed:
        MultipartUpload(client, "no-such-bucket", "x.csv.gz")

    assert "s3://no-such-bucket/x.csv.gz" in str(failed.value)
    assert "NoSuchBucket; create the bucket, or fix object_storage.bucket" in str(failed.value)


@pytest.mark.parametrize(
    ("access_key", "secret_key", "said"),
    [
        (None, "not-the-secret-key", "Object Storage answered 403 SignatureDoesNotMatch; check "
                                     "aitems.secret_key and the machine's clock"),
        ("AKIANOTISSUEDBYMOTO0", None, "Object Storage answered 403 InvalidAccessKeyId; check "
                                       "aitems.access_key (Object Storage takes the same keys)"),
    ],
    ids=["wrong-secret-key", "unknown-access-key"],
)
def test_a_key_pair_object_storage_refuses_is_an_operator_error_naming_the_cause(
    s3_server: S3Server, client: Any, access_key: str | None, secret_key: str | None, said: str
) -> None:
    """moto checks every signature: the wrong key pair is refused, the right one passes."""
    refused = s3_server.client(REGION, access_key=access_key, secret_key=secret_key)
    key = "boot/refused.csv.gz"

    with pytest.raises(ObjectStorageError) as failed:
        MultipartUpload(refused, BUCKET, key)

    assert str(failed.value) == f"could not start the upload of s3://{BUCKET}/{key}: {said}"
    assert "not-the-secret-key" not in str(failed.value)
    assert _unfinished(client, key) == []
    with MultipartUpload(client, BUCKET, key) as upload:  # the right key pair: accepted
        upload.complete()


def test_an_unreachable_endpoint_is_an_operator_error() -> None:
    from tests.test_client import closed_port

    client = s3_client(f"http://127.0.0.1:{closed_port()}", REGION, "ak", "sk")
    client.meta.config.retries = {"max_attempts": 1}

    with pytest.raises(ObjectStorageError) as failed:
        abort_unfinished(client, BUCKET, "x")

    assert "check object_storage.endpoint and the network path" in str(failed.value)


def test_parts_grow_so_ten_thousand_hold_hundreds_of_gigabytes() -> None:
    assert part_size(1) == part_size(2000) == 5 * MIB
    assert part_size(2001) == 10 * MIB
    assert sum(part_size(n) for n in range(1, 10_001)) > 300 * 1024 * MIB


def test_the_proxy_refuses_a_default_boto3_client_as_ncp_does(
    endpoint: str, s3_server: S3Server
) -> None:
    """The fake in front of moto is what makes the checks above mean something: boto3's
    defaults send checksum headers with an upload, and are refused."""
    import boto3
    from botocore.exceptions import ClientError

    default = boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                           aws_access_key_id=s3_server.access_key,
                           aws_secret_access_key=s3_server.secret_key)

    with pytest.raises(ClientError) as refused:
        default.put_object(Bucket=BUCKET, Key="boot/default.csv", Body=b"x")

    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    _RefusesChecksums.refused.clear()
