"""The ground floor: where things live on disk and how they are written (atomically), caches,
result records, the tuning protocol, warnings kept for the records, thread counts, checkpoints.

May import: the standard library, numpy, pandas, torch (checkpoint only); no other wing.
"""
