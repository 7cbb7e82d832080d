"""moto's server (S3, Glue) on a free local port, and the Athena stand-in over it.

Everything listens on 127.0.0.1 only and every client is pointed at it
explicitly; no AWS account is needed or reached::

    with moto_server() as moto:                      # dummy credentials meanwhile
        glue = glue_warehouse(moto, "methylation")   # Iceberg in Glue, data in S3 (both moto)
        build_cohort(glue, ...)
        with start_standin(glue, moto) as standin:   # Athena's API, SQL run on DuckDB
            athena = athena_warehouse(standin, moto, moto.new_bucket())

On leaving a ``with`` (also on an error or Ctrl-C) the server is stopped, its
port closed, its data dropped and the environment restored.  The environment
is the process's: while moto's server runs, every AWS client of this process
sees the dummy credentials, and none of the user's own AWS settings.
"""

from __future__ import annotations

import importlib
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xr_methyl.errors import MissingDependencyError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from xr_methyl.testing.athena_standin import AthenaStandIn
    from xr_methyl.warehouse import AthenaWarehouse, IcebergWarehouse

__all__ = [
    "REGION",
    "Moto",
    "athena_warehouse",
    "glue_warehouse",
    "local_environment",
    "moto_server",
    "require",
    "start_standin",
]

REGION = "us-east-1"
#: The environment while moto's server runs (every other ``AWS_*`` variable is hidden meanwhile).
DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    # No profile, role or endpoint from the user's own configuration files.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
_NO_PROXY = ("NO_PROXY", "no_proxy")
_NEEDS = (("moto.server", "moto[server]"), ("sqlglot", "sqlglot"))


def require() -> None:
    """Raise :class:`~xr_methyl.errors.MissingDependencyError` naming the extra to install if any part is missing."""
    missing = []
    for module, package in _NEEDS:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise MissingDependencyError(
            f"AWS on this machine (moto's server, the Athena stand-in) needs {' and '.join(missing)}, "
            "which are not installed; install the demo extra: pip install 'xr_methyl[demo]' "
            "(from a checkout: pip install -e '.[demo]'; the test extra includes it)"
        )


@contextmanager
def local_environment() -> Iterator[None]:
    """Set :data:`DUMMY_ENV`, hide every other ``AWS_*`` variable and keep 127.0.0.1 off any proxy.

    Everything is restored on exit.
    """
    names = [k for k in os.environ if k.startswith("AWS_")] + [k for k in _NO_PROXY if k in os.environ]
    saved = {k: os.environ.pop(k) for k in names}
    os.environ.update(DUMMY_ENV)
    for key in _NO_PROXY:  # an HTTP(S)_PROXY of the user's must not see the local servers' traffic
        os.environ[key] = ",".join(filter(None, [saved.get(key), "127.0.0.1", "localhost"]))
    try:
        yield
    finally:
        for key in [k for k in os.environ if k.startswith("AWS_")] + list(_NO_PROXY):
            os.environ.pop(key, None)
        os.environ.update(saved)


@contextmanager
def _quiet(logger_name: str, level: int = logging.WARNING) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)


@dataclass
class Moto:
    """A running moto server: its endpoint, and S3 conveniences."""

    endpoint: str

    def s3(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION)

    def new_bucket(self, prefix: str = "xr-methyl") -> str:
        """Create a bucket with a fresh name starting with ``prefix``; return its name."""
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


@contextmanager
def moto_server() -> Iterator[Moto]:
    """moto's server on a free port of 127.0.0.1, in a :func:`local_environment` while it runs.

    Its data live in this process's memory and are gone once it stops.  moto
    keeps them in module globals, which every moto server of the process
    shares: run one at a time.
    """
    require()
    from moto.server import ThreadedMotoServer

    # werkzeug (moto's HTTP server) logs every request at INFO.
    with local_environment(), _quiet("werkzeug"):
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        moto = Moto(endpoint=f"http://{host}:{port}")
        try:
            yield moto
        finally:
            try:
                _reset(moto)
            finally:
                server.stop()  # serve_forever's exit closes the listening socket


def _reset(moto: Moto) -> None:
    """Drop every bucket, database, ... of moto's in this process (moto's documented reset call)."""
    from urllib.request import ProxyHandler, Request, build_opener

    try:
        with build_opener(ProxyHandler({})).open(Request(f"{moto.endpoint}/moto-api/reset", method="POST"), timeout=30):
            pass
    except OSError as err:  # the server is going away anyway; say why its data may linger
        logging.getLogger(__name__).warning("could not reset moto's state: %s", err)


def glue_warehouse(moto: Moto, namespace: str, *, bucket: str | None = None) -> IcebergWarehouse:
    """An Iceberg warehouse whose catalog is moto's Glue and whose data lie in ``bucket`` (a new one by default)."""
    from xr_methyl.warehouse import open_warehouse

    bucket = bucket or moto.new_bucket("glue")
    return open_warehouse(
        f"glue://{namespace}?region={REGION}&glue.endpoint={moto.endpoint}&s3.endpoint={moto.endpoint}"
        f"&warehouse=s3://{bucket}/warehouse"
    )


def start_standin(warehouse, moto: Moto, *, database: str | None = None, **options: Any) -> AthenaStandIn:
    """A running Athena stand-in over ``warehouse``'s Iceberg tables, writing to moto's S3.

    ``database`` (the name queries use) defaults to the warehouse's namespace.
    Stop it with ``.stop()``, or use it as a context manager.
    """
    require()
    from xr_methyl.testing.athena_standin import AthenaStandIn

    return AthenaStandIn(
        warehouse, database=database or warehouse.namespace, s3_endpoint=moto.endpoint, region=REGION, **options
    ).start()


def athena_warehouse(standin: AthenaStandIn, moto: Moto, bucket: str, **options: Any) -> AthenaWarehouse:
    """An :class:`~xr_methyl.AthenaWarehouse` (the unmodified PyAthena client) talking to ``standin``.

    UNLOAD output goes to ``s3://<bucket>/unload/``, query results to
    ``s3://<bucket>/athena-results/``; ``options`` are further constructor options.
    """
    from xr_methyl.warehouse import AthenaWarehouse

    return AthenaWarehouse(
        standin.database,
        unload_location=f"s3://{bucket}/unload/",
        s3_staging_dir=f"s3://{bucket}/athena-results/",
        region=REGION,
        endpoint_url=standin.endpoint,
        s3_endpoint_url=moto.endpoint,
        **options,
    )
