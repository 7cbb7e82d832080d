"""Offline AWS for tests: helpers over :mod:`xr_methyl.testing.local_aws`.

The ``moto_server`` fixture is in conftest.py.  No test needs AWS credentials:
dummy ones are set while moto's server runs (the session), and every client is
pointed at the local servers explicitly.
"""

from __future__ import annotations

from xr_methyl.testing import local_aws
from xr_methyl.testing.local_aws import REGION, Moto, glue_warehouse, start_standin

__all__ = ["REGION", "Moto", "athena_for", "glue_warehouse", "start_standin"]


def athena_for(standin, moto: Moto, bucket: str, **options):
    """An AthenaWarehouse talking to ``standin``, with fast polling for tests."""
    options = {"poll_interval": 0.02, "retry_delay": 0.05, "timeout": 60, **options}
    return local_aws.athena_warehouse(standin, moto, bucket, **options)
