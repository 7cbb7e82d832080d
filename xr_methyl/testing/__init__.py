"""AWS on this machine, offline: moto's server (S3, Glue) and an Athena stand-in.

What the test suite and ``xr-methyl demo --athena`` run the production path on:

* :mod:`xr_methyl.testing.local_aws`: moto's server on a free local port with
  dummy credentials for as long as it runs, a Glue-on-moto Iceberg warehouse,
  and an :class:`~xr_methyl.AthenaWarehouse` pointed at the stand-in;
* :mod:`xr_methyl.testing.athena_standin`: Athena's API over Iceberg tables,
  really running the SQL (sqlglot, DuckDB) and writing UNLOAD output to S3.

They need the ``demo`` extra (moto's server and sqlglot), which ``test``
includes: ``pip install "xr_methyl[demo]"``.  Nothing here is imported by
``import xr_methyl``.
"""
