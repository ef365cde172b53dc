"""The scan protocol now lives at the index layer (unidb/index/iterator.py), which every access
path implements; re-exported here for code written against the old name."""
from unidb.index.iterator import ScanBatch, ScanIterator, iterate

__all__ = ["ScanBatch", "ScanIterator", "iterate"]
