"""Dense vector index: SPANN partitions kept fresh in place by LIRE (docs/partition-index.md)."""
from unidb.index.partition.index import PartitionIndex
from unidb.index.partition.options import PartitionOptions

__all__ = ["PartitionIndex", "PartitionOptions"]
