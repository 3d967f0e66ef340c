"""Where the emulator reads dataset files: an S3-compatible Object Storage, through boto3.

boto3 is an optional dependency (``pip install 'aitems-sync[objectstorage]'``), imported only
here and only when ``--object-storage`` is given, so the emulator starts without it. The client is
built as for NCP Object Storage (SigV4, path-style addressing, checksums only when required).
``osInfo.key`` names an object, or a prefix ending in ``/`` under which exactly one ``.csv`` or
``.csv.gz`` object must be. The object's body is handed to the parser as the stream it is, so
the file is read (and gunzipped) as it downloads, never held whole in memory or on disk. Every
failure, a connection lost halfway included, becomes a `FileRejected` whose reason starts with
the ``s3://bucket/key`` it is about and never holds a key pair.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit

from aitems_sync.emulator.csvfile import FileRejected, is_data_key
from aitems_sync.errors import UsageError

T = TypeVar("T")

#: osInfo.region -> the Object Storage region name SigV4 signs with; others are used as given.
REGIONS = {"KR": "kr-standard", "US": "us-standard", "SG": "sg-standard", "JP": "jp-standard",
           "DE": "de-standard"}
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"}


@dataclass(frozen=True)
class ObjectStorage:
    """An Object Storage endpoint and, optionally, the one key pair to read it with (by default
    the key pair that signed the dataset call, as NCP uses the same keys)."""

    endpoint: str
    access_key: str | None = None
    secret_key: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0

    def __post_init__(self) -> None:
        # A URL is shown in logs and in boto3's connection errors (which a dataset's
        # statusReason carries): a key pair in its user info would leak there.
        if "@" in urlsplit(self.endpoint).netloc:
            raise UsageError("--object-storage: the URL must not hold a key pair; give it "
                             "with --object-storage-key or the environment variable "
                             "AITEMS_EMULATOR_OBJECT_STORAGE_KEY")

    def __repr__(self) -> str:
        return f"ObjectStorage(endpoint={self.endpoint!r}, access_key={self.access_key!r})"


def require_boto3() -> None:
    """Raise `UsageError` with the fix when boto3 is not installed."""
    try:
        import boto3  # noqa: F401  (optional: see the module docstring)
    except ImportError as error:
        raise UsageError("--object-storage needs boto3: pip install "
                         "'aitems-sync[objectstorage]'") from error


class ObjectReader:
    """Reads dataset files from one `ObjectStorage`, keeping a boto3 client per region and key
    pair (building one loads botocore's service model: a noticeable fraction of a second)."""

    def __init__(self, storage: ObjectStorage) -> None:
        self.storage = storage
        self._clients: dict[tuple[str, str, str], Any] = {}
        self._lock = threading.Lock()

    def read(
        self, os_info: Mapping[str, str], credentials: tuple[str, str],
        parse: Callable[[IO[bytes], bool], T],
    ) -> T:
        """Find the file ``os_info`` names and return ``parse(body, gzipped)``, ``body`` being
        the object's content as it downloads.

        ``credentials`` (access key, secret key) are used unless the storage fixes its own.
        """
        return _read(lambda: self._client(os_info["region"], credentials), os_info, parse)

    def _client(self, region: str, credentials: tuple[str, str]) -> Any:
        storage = self.storage
        if storage.access_key is not None and storage.secret_key is not None:
            credentials = (storage.access_key, storage.secret_key)
        with self._lock:
            client = self._clients.get((region, *credentials))
            if client is None:
                client = _new_client(storage, region, credentials)
                self._clients[(region, *credentials)] = client
            return client


def _read(
    make_client: Callable[[], Any], os_info: Mapping[str, str],
    parse: Callable[[IO[bytes], bool], T],
) -> T:
    from botocore.exceptions import BotoCoreError, ClientError  # optional: see the docstring

    bucket, key = os_info["bucket"], os_info["key"]
    where = f"s3://{bucket}/{key}"
    try:
        client = make_client()
        found = _locate(client, bucket, key, where)
        where = f"s3://{bucket}/{found}"
        body = client.get_object(Bucket=bucket, Key=found)["Body"]
        try:
            return parse(body, found.lower().endswith(".gz"))
        finally:
            body.close()
    except FileRejected as rejected:
        raise FileRejected(f"{where}: {rejected.reason}") from None
    except ClientError as error:
        raise FileRejected(f"{where}: {_client_error(error, bucket)}") from None
    except BotoCoreError as error:
        raise FileRejected(f"{where}: cannot read from Object Storage ({error})") from None


def _new_client(storage: ObjectStorage, region: str, credentials: tuple[str, str]) -> Any:
    import boto3  # optional: see the module docstring
    from botocore.config import Config

    access_key, secret_key = credentials
    config = Config(
        signature_version="s3v4",
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"},
        connect_timeout=storage.connect_timeout,
        read_timeout=storage.read_timeout,
        retries={"max_attempts": 3, "mode": "standard"},
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=storage.endpoint, region_name=REGIONS.get(region.upper(), region),
        aws_access_key_id=access_key, aws_secret_access_key=secret_key, config=config,
    )


def _locate(client: Any, bucket: str, key: str, where: str) -> str:
    """The object key to read: ``key`` itself, or the one data file under the prefix ``key/``."""
    if not key.endswith("/"):
        if not is_data_key(key):
            raise FileRejected("the key must end in .csv or .csv.gz (or name a prefix ending "
                               "in '/')")
        return key
    found: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
        found += [item["Key"] for item in page.get("Contents", []) if is_data_key(item["Key"])]
        if len(found) > 1:
            raise FileRejected(f"more than one .csv or .csv.gz object under the prefix "
                               f"({', '.join(found[:2])}, ...); the emulator reads exactly one")
    if not found:
        raise FileRejected("no .csv or .csv.gz object under the prefix")
    return found[0]


def _client_error(error: Any, bucket: str) -> str:
    info = error.response.get("Error", {})
    code = str(info.get("Code", "")) or "unknown"
    if code in ("NoSuchKey", "404"):
        return "no such object"
    if code == "NoSuchBucket":
        return f"no such bucket {bucket}"
    if code in _DENIED:
        return (f"access denied ({code}); check the key pair the emulator reads with "
                "(--object-storage-key, or the key that signed the dataset call)")
    return f"Object Storage answered {code}"
