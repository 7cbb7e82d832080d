"""Offline AWS for tests: moto's server (S3, Glue) on a free port, and the Athena stand-in.

Test modules import the fixtures they use from here.  No test needs AWS
credentials: dummy ones are set for the session, and every client is pointed
at the local servers explicitly.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pytest

REGION = "us-east-1"
_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}
_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
          "AWS_ATHENA_S3_STAGING_DIR", "AWS_ATHENA_WORK_GROUP")


@dataclass
class Moto:
    endpoint: str

    def s3(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION)

    def new_bucket(self, prefix: str = "xr-methyl") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.s3().create_bucket(Bucket=name)
        return name

    @property
    def options(self) -> dict[str, str]:
        """storage_options of an S3 store on this server."""
        return {"endpoint_url": self.endpoint}

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        out = []
        for page in self.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return out


@pytest.fixture(scope="session")
def moto_server():
    """moto's server on a free port, with dummy credentials in the environment."""
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in (*_ENV, *_UNSET)}
    os.environ.update(_ENV)
    for k in _UNSET:
        os.environ.pop(k, None)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield Moto(endpoint=f"http://{host}:{port}")
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start_standin(warehouse, moto: Moto, *, database: str = "methylation", **options):
    """An Athena stand-in over ``warehouse``'s Iceberg tables, writing to moto's S3."""
    from athena_standin import AthenaStandIn

    return AthenaStandIn(warehouse, database=database, s3_endpoint=moto.endpoint, region=REGION, **options).start()


def athena_for(standin, moto: Moto, bucket: str, **options):
    """An AthenaWarehouse talking to ``standin``, with fast polling for tests."""
    from xr_methyl import AthenaWarehouse

    options = {"poll_interval": 0.02, "retry_delay": 0.05, "timeout": 60, **options}
    return AthenaWarehouse(
        standin.database,
        unload_location=f"s3://{bucket}/unload/",
        s3_staging_dir=f"s3://{bucket}/athena-results/",
        region=REGION,
        endpoint_url=standin.endpoint,
        s3_endpoint_url=moto.endpoint,
        **options,
    )
