"""On-disk snapshot of a PartitionIndex: generation files + one small manifest.

Files in the index folder (all written with unidb.storage.files: temp, fsync, rename, fsync dir):

    partition-index.json          manifest: format, generation, dim, metric, options, covered
                                  (the WAL position the snapshot covers), counters, file names
    pidx-<gen>-centroids.npy      (P, dim) float32, live partitions only, renumbered 0..P-1
    pidx-<gen>-lens.npy           (P,) int64 valid entries per posting
    pidx-<gen>-vecs.npy           (E, dim) float32 posting entries, posting after posting
    pidx-<gen>-sqn.npy / -rids.npy / -vers.npy   (E,) squared norms, row ids, versions
    pidx-<gen>-vmap.npy           (R,) uint8 version map
    pidx-<gen>-primary.npy        (R,) int64 primary posting per row (-1 none), renumbered

Save writes a new generation, then atomically replaces the manifest: a crash at any point
leaves the previous manifest and all files it names intact. Files the manifest does not name
(older generations, half-written temps, disk-store working files) are garbage, deleted by
save after the switch and by load before reading.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from unidb.errors import CorruptionError
from unidb.index.partition.options import PartitionOptions
from unidb.index.partition.routing import Routing
from unidb.kernels import partition as K
from unidb.storage import files

MANIFEST = "partition-index.json"
PREFIX = "pidx-"
FORMAT = 1
_ARRAYS = ("centroids", "lens", "vecs", "sqn", "rids", "vers", "vmap", "primary")
_GARBAGE_PREFIXES = (PREFIX, "postings-work-")
_GENERATION = re.compile(rf"^{PREFIX}(\d+)-")


def _snapshot(idx) -> dict[str, np.ndarray]:
    """Compact copy of the index state (valid entries only), taken under the writer mutex."""
    with idx._mutex:
        routing, arena, vmap = idx._routing, idx._store.arena, idx._vmap
        live = routing.live_ids
        remap = np.full(routing.n_slots + 1, -1, dtype=np.int64)
        remap[live] = np.arange(len(live))
        pos, lens = [], np.zeros(len(live), dtype=np.int64)
        for j, p in enumerate(live):
            vp = K.valid_positions(arena.rids, arena.vers, vmap, arena.packed,
                                   np.array([p], np.int64))
            lens[j] = len(vp)
            pos.append(vp)
        pos = np.concatenate(pos) if pos else np.zeros(0, np.int64)
        prim = idx._primary[:len(vmap)] if len(idx._primary) >= len(vmap) else \
            np.concatenate([idx._primary, np.full(len(vmap) - len(idx._primary), -1, np.int64)])
        prim = np.where(prim >= 0, remap[prim], -1)
        return {
            "centroids": routing.centroids[live].copy(), "lens": lens,
            "vecs": arena.vecs[pos], "sqn": arena.sqn[pos], "rids": arena.rids[pos],
            "vers": arena.vers[pos], "vmap": vmap.copy(), "primary": prim,
            "_live": idx._live, "_counters": dict(idx.counters),
        }


def _collect_garbage(folder: Path, keep: set[str]) -> None:
    files.remove_stale_temps(folder)
    removed = False
    for f in folder.iterdir():
        if f.name.startswith(_GARBAGE_PREFIXES) and f.name not in keep:
            f.unlink(missing_ok=True)
            removed = True
    if removed:
        files.fsync_dir(folder)


def save(idx, folder, covered: int) -> None:
    folder = files.ensure_dir(folder)
    snap = _snapshot(idx)
    man_path = folder / MANIFEST
    # The next generation is read from the file names, not the manifest: a damaged manifest
    # must not stop the save that replaces it.
    gen = 1 + max((int(m.group(1)) for f in folder.iterdir()
                   if (m := _GENERATION.match(f.name))), default=0)
    names = {}
    for key in _ARRAYS:
        name = f"{PREFIX}{gen}-{key}.npy"
        files.write_npy(folder / name, snap[key])
        names[key] = name
    files.atomic_write_json(man_path, {
        "format": FORMAT, "generation": gen, "dim": idx.dim, "metric": idx.metric,
        "options": idx.options.to_dict(), "covered": int(covered), "live": int(snap["_live"]),
        "counters": snap["_counters"], "files": names,
    })
    keep = set(names.values())
    if idx._store.__class__.__name__ == "DiskPostingStore" and idx._store.folder == folder:
        keep |= {p.name for ps in idx._store._files.values() for p in ps}
    _collect_garbage(folder, keep)


def load(cls, folder):
    folder = Path(folder)
    man_path = folder / MANIFEST
    if not man_path.exists():
        raise FileNotFoundError(f"no partition index snapshot in {folder} (missing {MANIFEST})")
    man = files.read_json(man_path)
    if man.get("format") != FORMAT:
        raise CorruptionError(f"{man_path}: unsupported format {man.get('format')!r} "
                              f"(expected {FORMAT})")
    _collect_garbage(folder, set(man["files"].values()))
    arr = {k: files.read_npy(folder / man["files"][k], mmap=True) for k in _ARRAYS}
    opts = PartitionOptions(**man["options"])
    idx = cls(int(man["dim"]), man["metric"], opts, folder if opts.storage == "disk" else None)
    cents = np.ascontiguousarray(arr["centroids"], dtype=np.float32)
    cn = np.einsum("ij,ij->i", cents, cents).astype(np.float32)
    idx._routing = Routing.create(cents, cn, np.ones(len(cents), bool))
    lens = np.asarray(arr["lens"], dtype=np.int64)
    idx._store.bulk_load(lens, arr["vecs"], arr["sqn"], arr["rids"], arr["vers"])
    idx._vmap = np.array(arr["vmap"], dtype=np.uint8)
    idx._primary = np.array(arr["primary"], dtype=np.int64)
    idx._plive = np.zeros(max(len(cents), 1), dtype=np.int64)
    live_prim = idx._primary[idx._primary >= 0]
    idx._plive[:len(cents)] = np.bincount(live_prim, minlength=len(cents))[:len(cents)]
    # radii are an upper bound kept in memory only: recompute them tight from the entries
    idx._widen_radius(np.repeat(np.arange(len(cents)), lens), np.asarray(arr["vecs"]))
    idx._live = int(man["live"])
    idx.counters.update(man.get("counters", {}))
    idx._publish()
    return idx, int(man["covered"])
