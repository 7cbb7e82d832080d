"""Reading and writing the store's Zarr v3 arrays faster than zarr-python does on its own.

``rowread`` reads lists of rows (a local shard reader with ``pread``);
``bycpg`` encodes and reads the CpG-major copy of beta; ``internals`` holds
every use of zarr-python's private API, so that a zarr upgrade is checked in
one place.  Only numpy is imported at module level: the xarray backend imports
these modules whenever xarray looks up engines.
"""
