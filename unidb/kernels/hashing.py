"""64-bit hashes of variable-length byte strings laid out as Arrow lays out a string array.

The primary-key map (engine/keys.py) keeps string keys as sorted 64-bit hashes and checks the
stored key on a match, so the hash needs to be fast, stable across processes and platforms
(no per-process seed: a reader must hash as the writer does), and well mixed — not
cryptographic. FNV-1a over the bytes, then the splitmix64 finaliser so that keys differing only
in their last bytes still spread over the whole 64-bit range.
"""
from __future__ import annotations

import numpy as np
from numba import njit

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@njit(cache=True)
def hash_strings(offsets: np.ndarray, data: np.ndarray, out: np.ndarray) -> None:
    """out[i] = hash of data[offsets[i]:offsets[i + 1]] for each of the len(out) strings."""
    for i in range(out.shape[0]):
        h = _FNV_OFFSET
        for j in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[j])) * _FNV_PRIME
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        out[i] = h ^ (h >> np.uint64(31))
