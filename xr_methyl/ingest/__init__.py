"""Ingest: long warehouse rows -> wide blocks written into a store, for the samples it lacks.

``loader`` (:class:`Loader`, :class:`LoadReport`) drives it; ``fill`` fills one
reserved batch unit by unit (any process); ``locate`` maps long rows to
(row, column) positions through the id hash table of ``hashing``; ``scatter``
places them into dense blocks (pure numpy); ``_malloc`` lets glibc reuse freed
memory while a batch is filled.
"""
