"""On-disk snapshot of a PartitionIndex: generation files + one small manifest.

Files in the index folder (all written with unidb.storage.files: temp, fsync, rename, fsync dir):

    partition-index.json          manifest: format, generation, dim, metric, options (the
                                  posting store's kind among them), covered (the WAL position
                                  the snapshot covers), live rows, counters, file names
    pidx-<gen>-centroids.npy      (P, dim) float32, live partitions only, renumbered 0..P-1
    pidx-<gen>-vmap.npy           (R,) uint8 version map
    pidx-<gen>-primary.npy        (R,) int64 primary posting per row (-1 none), renumbered
    pidx-<gen>-...                the posting store's files (`PostingView.save`; by default
                                  lens (P,) int64 valid entries per posting, then vecs (E, dim)
                                  float32, sqn / rids / vers (E,) of those entries, posting
                                  after posting)

Save reads the index's published view (immutable: writers are not held up by the writes) and
a copy of the primary postings as of that view (`PartitionState.published_primary`, taken
under the mutex: the writer changes its array in place, so a slice of it read after the mutex
is released would mix in later jobs' postings), writes a new generation, then atomically
replaces the manifest: a crash at any point leaves the previous manifest and all files it
names intact. Files the manifest does not name (older generations, half-written temps, posting
stores' working files no open store uses) are garbage, deleted by save after the switch and by
load before reading.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from unidb.errors import CorruptionError
from unidb.index.partition.routing import Routing
from unidb.index.partition.state import PartitionState
from unidb.index.partition.store import WORK_PREFIX
from unidb.storage import files

MANIFEST = "partition-index.json"
PREFIX = "pidx-"
FORMAT = 1
_GARBAGE_PREFIXES = (PREFIX, WORK_PREFIX)
_GENERATION = re.compile(rf"^{PREFIX}(\d+)-")
# Postings per pass when radii are recomputed at load (bounds the temporary copies).
RADIUS_CHUNK = 256


def _collect_garbage(folder: Path, keep: set[str]) -> None:
    files.remove_stale_temps(folder)
    removed = False
    for f in folder.iterdir():
        if f.name.startswith(_GARBAGE_PREFIXES) and f.name not in keep:
            f.unlink(missing_ok=True)
            removed = True
    if removed:
        files.fsync_dir(folder)


def save(st: PartitionState, dim: int, metric: str, folder, covered: int) -> None:
    folder = files.ensure_dir(folder)
    with st.mutex:       # one moment: the published view and the primaries that go with it
        view = st.view
        primary = st.published_primary()          # a copy: writers change st.primary in place
        primary = primary[:len(view.vmap)] if len(primary) >= len(view.vmap) else \
            np.concatenate([primary, np.full(len(view.vmap) - len(primary), -1, np.int64)])
        counters = dict(st.counters)
        options = st.options.to_dict()
        working = {p.name for p in st.store.working_files() if p.parent == folder}
    routing = view.routing
    live = routing.live_ids.astype(np.int64)
    remap = np.full(routing.n_slots + 1, -1, dtype=np.int64)
    remap[live] = np.arange(len(live))
    primary = np.where(primary >= 0, remap[primary], -1)
    # The next generation is read from the file names, not the manifest: a damaged manifest
    # must not stop the save that replaces it.
    gen = 1 + max((int(m.group(1)) for f in folder.iterdir()
                   if (m := _GENERATION.match(f.name))), default=0)
    names = {}
    for key, arr in (("centroids", routing.centroids[live]), ("vmap", view.vmap),
                     ("primary", primary)):
        names[key] = f"{PREFIX}{gen}-{key}.npy"
        files.write_npy(folder / names[key], arr)
    stored = view.postings.save(folder, f"{PREFIX}{gen}-", view.vmap, live)
    clash = set(stored) & set(names)
    if clash:
        raise ValueError(f"posting store file keys {sorted(clash)} clash with the index's")
    names.update(stored)
    files.atomic_write_json(folder / MANIFEST, {
        "format": FORMAT, "generation": gen, "dim": dim, "metric": metric,
        "options": options, "covered": int(covered), "live": int(view.live),
        "counters": counters, "files": names,
    })
    _collect_garbage(folder, set(names.values()) | working)


def read_manifest(folder) -> dict:
    """The manifest of the snapshot in `folder`, after deleting the files it does not name."""
    folder = Path(folder)
    man_path = folder / MANIFEST
    if not man_path.exists():
        raise FileNotFoundError(f"no partition index snapshot in {folder} (missing {MANIFEST})")
    man = files.read_json(man_path)
    if man.get("format") != FORMAT:
        raise CorruptionError(f"{man_path}: unsupported format {man.get('format')!r} "
                              f"(expected {FORMAT})")
    _collect_garbage(folder, set(man["files"].values()))
    return man


def restore(st: PartitionState, folder, man: dict) -> None:
    """Fill a new index's state from the snapshot `man` (read_manifest) names, and publish."""
    folder = Path(folder)
    names = man["files"]
    cents = np.ascontiguousarray(files.read_npy(folder / names["centroids"], mmap=True),
                                 dtype=np.float32)
    cn = np.einsum("ij,ij->i", cents, cents).astype(np.float32)
    st.routing = Routing.create(cents, cn, np.ones(len(cents), bool))
    st.vmap = np.array(files.read_npy(folder / names["vmap"]), dtype=np.uint8)
    st.store.load(folder, names)
    st.primary = np.array(files.read_npy(folder / names["primary"]), dtype=np.int64)
    st.plive = np.zeros(max(len(cents), 1), dtype=np.int64)
    live_prim = st.primary[st.primary >= 0]
    st.plive[:len(cents)] = np.bincount(live_prim, minlength=len(cents))[:len(cents)]
    # radii are an upper bound kept in memory only: recompute them tight from the entries
    for s in range(0, len(cents), RADIUS_CHUNK):
        posts = np.arange(s, min(s + RADIUS_CHUNK, len(cents)), dtype=np.int64)
        vecs, sqn, _, _, lens = st.store.valid_entries(st.vmap, posts)
        st.note_norms(sqn)
        st.widen_radius(np.repeat(posts, lens), vecs)
    st.live = int(man["live"])
    st.counters.update(man.get("counters", {}))
    st.publish()
