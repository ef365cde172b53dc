"""The engine: one object per open table that owns its write path and its indexes.

`database.py` holds what every handle on one database folder in this process shares
(`DatabaseEngine`: the folder, its writer lock, the open tables); `table.py` holds one open
table (`TableEngine`: the store, the indexes, the primary-key map, and the write path
validate -> log -> apply -> feed indexes -> publish under one lock); `indexes.py` the indexes
of one table (`IndexSet`). The `api` layer above wraps these in the handles users hold.
"""
