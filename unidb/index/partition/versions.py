"""The version map (SPFresh): one uint8 per row id, 7-bit version + deleted flag (bit 7).

A posting entry stores the version it was written with; it is valid iff `vmap[row] ==
entry_version`. Deleting sets bit 7 (no entry version has it, so no copy matches); moving a
row (LIRE reassign) or replacing its vector bumps the version, which makes every older copy
stale at once without touching the postings that hold them. Versions wrap after 128 bumps of
one row between two compactions of a posting that still holds its oldest copy; SPFresh accepts
the same bound. Ids never seen read as deleted.

Growth is copy-on-write (a new, longer array is published), so a reader's array never changes
length under it.
"""
from __future__ import annotations

import numpy as np

DELETED = np.uint8(0x80)
VERSION_MASK = np.uint8(0x7F)


def new_map(n: int) -> np.ndarray:
    return np.full(n, DELETED, dtype=np.uint8)


def grow(vmap: np.ndarray, n: int) -> np.ndarray:
    """vmap if it already covers n row ids, else a copy extended (x2) with 'deleted' bytes."""
    if n <= len(vmap):
        return vmap
    out = new_map(max(n, 2 * len(vmap), 1024))
    out[:len(vmap)] = vmap
    return out


def is_live(vmap: np.ndarray, rids: np.ndarray) -> np.ndarray:
    inside = rids < len(vmap)
    out = np.zeros(len(rids), dtype=bool)
    out[inside] = (vmap[rids[inside]] & DELETED) == 0
    return out


def next_versions(vmap: np.ndarray, rids: np.ndarray) -> np.ndarray:
    """The version the next copy of each row gets (rids must be inside vmap)."""
    return ((vmap[rids] & VERSION_MASK) + np.uint8(1)) & VERSION_MASK
