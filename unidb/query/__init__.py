"""Query planning and execution over the access paths in unidb.index."""
