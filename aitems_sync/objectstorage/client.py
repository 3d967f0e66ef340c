"""The S3 client for NCP Object Storage, configured as NCP needs it.

- SigV4 and path-style addressing (``https://kr.object.ncloudstorage.com/BUCKET/KEY``).
- Checksums only when an operation requires them: boto3 1.36 and later add CRC32 checksum
  headers to every upload by default, and NCP Object Storage has been seen answering them with
  403 AccessDenied (aitems-api.md).
- The same access and secret key as the AiTEMS API gateway.
"""

from __future__ import annotations

from typing import Any

from aitems_sync.errors import UsageError

#: NCP Object Storage in Korea, the region AiTEMS reads datasets from.
KR_ENDPOINT = "https://kr.object.ncloudstorage.com"
KR_REGION = "kr-standard"
CONNECT_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 120


def s3_client(endpoint: str, region: str, access_key: str, secret_key: str) -> Any:
    """A boto3 S3 client for ``endpoint``; UsageError when boto3 is not installed."""
    try:
        import boto3  # here: an optional dependency, for the commands that need it only
        from botocore.config import Config
    except ImportError:
        raise UsageError(
            "Object Storage needs boto3, which is not installed: pip install "
            "'aitems-sync[objectstorage]'") from None
    config = Config(
        signature_version="s3v4",
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"},
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        retries={"max_attempts": 5, "mode": "standard"},
    )
    return boto3.client("s3", endpoint_url=endpoint, region_name=region,
                        aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                        config=config)
