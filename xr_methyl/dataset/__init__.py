"""A store as xarray sees it: ``engine="methylzarr"`` (``backend``), ``ds.methyl`` (``accessor``) and the
index of the CpG axis (``cpg_index``)."""
