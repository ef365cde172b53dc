"""Benchmark and test data: loaders for ../shared/data and the synthetic `synth1m` mixture.

Real sets (formats in ../shared/data/README.md): SIFT-small, MNIST test with labels, BEIR
SciFact with MiniLM embeddings. The synthetic mixture follows BENCHMARKS.md exactly, so every
script gets the same vectors; it is generated once and cached as .npy under the system temp
dir, then memory-mapped. `generate_like_siftsmall` stands in where the shared data is absent.
"""
from __future__ import annotations

import gzip
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from unidb.evaluate import METRICS, exact_knn

DATA_ENV_VAR = "UNIDB_DATA"          # overrides where the shared data folder is
CACHE_DIR_NAME = "unidb-bench-cache"  # under tempfile.gettempdir(); outside the repository

# --- synth1m, exactly as BENCHMARKS.md specifies (changing any of these changes every figure)
SYNTH_SEED = 20251122
SYNTH_K = 1000          # mixture components
SYNTH_D = 128           # dimension
SYNTH_R = 16            # rank of each component's factor loading
SYNTH_SIGMA = 0.2       # isotropic noise
SYNTH_DIRICHLET_ALPHA = 2.0
SYNTH_FACTOR_SCALE = 0.5
SYNTH_SIZES = {"base": 1_000_000, "queries": 1_000}
_SYNTH_STREAM = {"params": 0, "base": 1, "queries": 2}   # default_rng([SEED, stream])
_SYNTH_VERSION = 1      # bump when the cache layout (not the spec) changes
# numpy may change a Generator method's stream in a release, so caches are kept per version.
_NUMPY_MINOR = ".".join(np.__version__.split(".")[:2])

# --- expected shapes of the shared files (the README's checked values)
SIFTSMALL_DIM, SIFTSMALL_N_BASE, SIFTSMALL_N_QUERIES, SIFTSMALL_GT_K = 128, 10_000, 100, 100
MNIST_N_IMAGES, MNIST_DIM, MNIST_N_BASE, MNIST_GT_K = 10_000, 784, 9_000, 100
IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 2051, 2049
SCIFACT_N_DOCS, SCIFACT_N_QUERIES, SCIFACT_DIM = 5_183, 1_109, 384
SIFTSMALL_MAX_VALUE = 180.0   # SIFT components are integers in [0, 180]

Split = Literal["base", "queries"]


@dataclass
class Dataset:
    """Vectors with exact ground truth; ids in `gt` are row indices of `base`."""

    name: str
    base: np.ndarray                 # float32 (n, d)
    queries: np.ndarray              # float32 (nq, d)
    gt: np.ndarray                   # int64 (nq, k), nearest first
    metric: str = "l2"
    gt_dists: np.ndarray | None = None          # float64 (nq, k), Euclidean for l2
    base_labels: np.ndarray | None = None       # int64 (n,)
    query_labels: np.ndarray | None = None      # int64 (nq,)
    gt_same_label: np.ndarray | None = None     # int64 (nq, k), among rows of the query's label
    gt_same_label_dists: np.ndarray | None = None


@dataclass
class SciFact:
    """BEIR SciFact: corpus and queries in file order, test judgements, MiniLM embeddings."""

    corpus: list[dict[str, str]]                # {"_id", "title", "text"}
    queries: list[dict[str, str]]               # {"_id", "text"}, all 1,109
    test_qrels: dict[str, dict[str, int]]       # query id -> {doc id: relevance}
    corpus_emb: np.ndarray                      # float32 (5183, 384), unit length
    query_emb: np.ndarray                       # float32 (1109, 384), rows follow `queries`
    metric: str = "cosine"
    doc_ids: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.doc_ids = [d["_id"] for d in self.corpus]

    def test_query_indices(self) -> np.ndarray:
        """Indices into `queries` (and `query_emb`) of the judged test queries, in file order."""
        return np.array([i for i, q in enumerate(self.queries) if q["_id"] in self.test_qrels],
                        dtype=np.int64)


# ------------------------------------------------------------------------------ locations


def shared_data_dir() -> Path | None:
    """The shared data folder: $UNIDB_DATA if set, else <repo>/../shared/data, else None."""
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env)
    default = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    return default if default.is_dir() else None


def _data_folder(root: str | os.PathLike | None, sub: str) -> Path:
    """`root`/`sub` (root defaults to shared_data_dir()), or FileNotFoundError saying what to do."""
    base = Path(root) if root is not None else shared_data_dir()
    if base is None:
        raise FileNotFoundError(
            f"shared data folder not found (looked for {DATA_ENV_VAR} and <repo>/../shared/data); "
            f"set {DATA_ENV_VAR} to the folder holding {sub}/, or use generate_like_siftsmall()")
    folder = base / sub
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist: point {DATA_ENV_VAR} (or root=) at the "
                                f"folder holding {sub}/ (see ../shared/data/README.md)")
    return folder


def _require(path: Path) -> Path:
    """`path`, or FileNotFoundError naming it and what to do."""
    if not path.is_file():
        raise FileNotFoundError(f"missing data file {path}: restore it from ../shared/data "
                                "(see its README) or point UNIDB_DATA at a complete copy")
    return path


# -------------------------------------------------------------------------------- readers


def _read_vecs(path: str | os.PathLike, dtype: type) -> np.ndarray:
    """Records of (int32 dim, dim values) as an (n, dim) array; ValueError if malformed."""
    path = Path(path)
    raw = np.fromfile(_require(path), dtype="<i4")
    if raw.size == 0:
        raise ValueError(f"{path.name}: empty file, expected vecs records")
    dim = int(raw[0])
    if dim <= 0 or raw.size % (dim + 1) != 0:
        raise ValueError(f"{path.name}: {raw.size * 4} bytes is not a whole number of records "
                         f"of dim {dim} ({(dim + 1) * 4} bytes each): truncated or not a vecs file")
    records = raw.reshape(-1, dim + 1)
    bad = np.flatnonzero(records[:, 0] != dim)
    if bad.size:
        raise ValueError(f"{path.name}: record {int(bad[0])} has dim {int(records[bad[0], 0])}, "
                         f"expected {dim} like record 0")
    return records[:, 1:].view(dtype) if dtype is np.float32 else records[:, 1:].copy()


def read_fvecs(path: str | os.PathLike) -> np.ndarray:
    """An .fvecs file as float32 (n, dim)."""
    return np.ascontiguousarray(_read_vecs(path, np.float32))


def read_ivecs(path: str | os.PathLike) -> np.ndarray:
    """An .ivecs file as int64 (n, dim)."""
    return _read_vecs(path, np.int32).astype(np.int64)


def _check_shape(name: str, arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`arr`, or ValueError naming file `name` when its shape is not `shape`."""
    if arr.shape != shape:
        raise ValueError(f"{name}: shape {arr.shape}, expected {shape}")
    return arr


def _read_idx(path: Path, magic: int, shape: tuple[int, ...]) -> np.ndarray:
    """A gzipped IDX (MNIST) file of uint8 values; ValueError on a wrong magic or size."""
    data = gzip.open(_require(path)).read()
    header = 4 * (1 + len(shape))
    if len(data) < header:
        raise ValueError(f"{path.name}: {len(data)} bytes, shorter than the IDX header")
    fields = np.frombuffer(data[:header], dtype=">i4")
    if fields[0] != magic or tuple(int(x) for x in fields[1:]) != shape:
        raise ValueError(f"{path.name}: IDX header {fields.tolist()}, expected magic {magic} "
                         f"and dims {list(shape)}")
    body = np.frombuffer(data, dtype=np.uint8, offset=header)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path.name}: {body.size} values after the header, expected "
                         f"{int(np.prod(shape))}")
    return body.reshape(shape)


def _load_npy(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """An .npy file checked against the expected shape."""
    return _check_shape(path.name, np.load(_require(path)), shape)


def _read_jsonl(path: Path, keys: tuple[str, ...]) -> list[dict[str, str]]:
    """A JSON-lines file as dicts holding only `keys`; ValueError names the bad line."""
    out = []
    with open(_require(path), encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                out.append({k: obj[k] for k in keys})
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path.name}: line {lineno} is not a JSON object with "
                                 f"keys {keys}: {exc}") from exc
    return out


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """A BEIR qrels .tsv (header, CRLF endings) as {query id: {doc id: relevance}}."""
    qrels: dict[str, dict[str, int]] = {}
    with open(_require(path), encoding="utf-8", newline="") as f:
        lines = [ln.rstrip("\r\n") for ln in f]
    for lineno, line in enumerate(lines[1:], start=2):   # line 1 is the header
        if not line:
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not parts[2].lstrip("-").isdigit():
            raise ValueError(f"{path.name}: line {lineno} {line!r} is not "
                             "'query-id<TAB>corpus-id<TAB>score'")
        qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return qrels


# -------------------------------------------------------------------------------- loaders


def load_siftsmall(root: str | os.PathLike | None = None) -> Dataset:
    """SIFT-small: base (10000, 128), queries (100, 128), official top-100 gt; L2."""
    folder = _data_folder(root, "siftsmall")
    base = read_fvecs(folder / "siftsmall_base.fvecs")
    queries = read_fvecs(folder / "siftsmall_query.fvecs")
    gt = read_ivecs(folder / "siftsmall_groundtruth.ivecs")
    _check_shape("siftsmall_base.fvecs", base, (SIFTSMALL_N_BASE, SIFTSMALL_DIM))
    _check_shape("siftsmall_query.fvecs", queries, (SIFTSMALL_N_QUERIES, SIFTSMALL_DIM))
    _check_shape("siftsmall_groundtruth.ivecs", gt, (SIFTSMALL_N_QUERIES, SIFTSMALL_GT_K))
    return Dataset("siftsmall", base, queries, gt, metric="l2")


def load_mnist(root: str | os.PathLike | None = None) -> Dataset:
    """MNIST test: base = images 0..8999, queries = 9000..9999 (float32 pixels 0..255), labels,
    exact L2 top-100 gt unfiltered and restricted to the query's label."""
    folder = _data_folder(root, "mnist10k")
    side = int(np.sqrt(MNIST_DIM))
    images = _read_idx(folder / "t10k-images-idx3-ubyte.gz", IDX_IMAGES_MAGIC,
                       (MNIST_N_IMAGES, side, side)).reshape(MNIST_N_IMAGES, MNIST_DIM)
    labels = _read_idx(folder / "t10k-labels-idx1-ubyte.gz", IDX_LABELS_MAGIC,
                       (MNIST_N_IMAGES,)).astype(np.int64)
    nq = MNIST_N_IMAGES - MNIST_N_BASE
    gt_shape = (nq, MNIST_GT_K)
    vecs = images.astype(np.float32)
    return Dataset(
        "mnist10k", vecs[:MNIST_N_BASE], vecs[MNIST_N_BASE:],
        _load_npy(folder / "gt_l2_top100_ids.npy", gt_shape).astype(np.int64), metric="l2",
        gt_dists=_load_npy(folder / "gt_l2_top100_dist.npy", gt_shape).astype(np.float64),
        base_labels=labels[:MNIST_N_BASE], query_labels=labels[MNIST_N_BASE:],
        gt_same_label=_load_npy(folder / "gt_l2_top100_ids_filter_same_label.npy",
                                gt_shape).astype(np.int64),
        gt_same_label_dists=_load_npy(folder / "gt_l2_top100_dist_filter_same_label.npy",
                                      gt_shape).astype(np.float64))


def load_scifact(root: str | os.PathLike | None = None) -> SciFact:
    """BEIR SciFact: 5,183 docs, 1,109 queries, test qrels (300 queries), MiniLM embeddings."""
    folder = _data_folder(root, "scifact")
    corpus = _read_jsonl(folder / "corpus.jsonl", ("_id", "title", "text"))
    queries = _read_jsonl(folder / "queries.jsonl", ("_id", "text"))
    qrels = _read_qrels(folder / "qrels" / "test.tsv")
    corpus_emb = _load_npy(folder / "corpus_minilm.npy", (len(corpus), SCIFACT_DIM))
    query_emb = _load_npy(folder / "queries_minilm.npy", (len(queries), SCIFACT_DIM))
    return SciFact(corpus, queries, qrels, corpus_emb.astype(np.float32, copy=False),
                   query_emb.astype(np.float32, copy=False))


# ------------------------------------------------------------------------- synthetic mixture


@dataclass
class SynthParams:
    """The mixture's parameters, drawn from default_rng([SEED, 0]) in this field order."""

    weights: np.ndarray    # (K,) Dirichlet(2)
    means: np.ndarray      # (K, D) standard normal
    factors: np.ndarray    # (K, D, R) standard normal * 0.5 / sqrt(R)


def synth_params() -> SynthParams:
    """The synth1m mixture parameters (BENCHMARKS.md order: weights, means, factors)."""
    rng = np.random.default_rng([SYNTH_SEED, _SYNTH_STREAM["params"]])
    weights = rng.dirichlet(np.full(SYNTH_K, SYNTH_DIRICHLET_ALPHA))
    means = rng.standard_normal((SYNTH_K, SYNTH_D))
    factors = rng.standard_normal((SYNTH_K, SYNTH_D, SYNTH_R)) * (SYNTH_FACTOR_SCALE
                                                                   / np.sqrt(SYNTH_R))
    return SynthParams(weights, means, factors)


def sample_mixture(g: np.random.Generator, n: int, params: SynthParams,
                   out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """n points from generator `g` as BENCHMARKS.md draws them: (X float32 (n, D), labels int64).

    Writes into `out` (e.g. a memory map) when given. Rows are computed in float64 per
    component and stored as float32, bit-identical to building X in float64 and casting.
    """
    labels = g.choice(SYNTH_K, n, p=params.weights)
    x = np.empty((n, SYNTH_D), dtype=np.float32) if out is None else out
    # A stable sort groups rows by component in increasing row order: the same `rows` as
    # flatnonzero(labels == k) for each k, without K passes over the labels.
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(SYNTH_K + 1))
    for k in range(SYNTH_K):
        rows = order[bounds[k]:bounds[k + 1]]
        z = g.standard_normal((len(rows), SYNTH_R))
        e = g.standard_normal((len(rows), SYNTH_D))
        x[rows] = params.means[k] + z @ params.factors[k].T + SYNTH_SIGMA * e
    return x, labels


def _cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    """The synth cache folder (created): `cache_dir`, else <system temp>/unidb-bench-cache."""
    if cache_dir is not None:
        path = Path(cache_dir)
    else:
        path = Path(tempfile.gettempdir()) / CACHE_DIR_NAME
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cache_prefix() -> str:
    """Names every synth cache file after what determines its content."""
    return f"synth-v{_SYNTH_VERSION}-s{SYNTH_SEED}-np{_NUMPY_MINOR}"


def _synth_paths(split: Split, cache_dir: str | os.PathLike | None) -> tuple[Path, Path]:
    """Cache files of one split: the vectors and their component labels."""
    stem = f"{_cache_prefix()}-{split}-n{SYNTH_SIZES[split]}"
    folder = _cache_dir(cache_dir)
    return folder / f"{stem}.npy", folder / f"{stem}-labels.npy"


def _load_cached(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
    """A read-only memory map of a cached array, or None when absent or not the expected one."""
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    return arr if arr.shape == shape and arr.dtype == dtype else None


def _tmp_name(path: Path) -> Path:
    """A per-process temporary name beside `path`, renamed onto it once complete."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _synth_full(split: Split, cache_dir: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray]:
    """The whole split (X, labels), generated once then memory-mapped from the cache."""
    n = SYNTH_SIZES[split]
    x_path, lab_path = _synth_paths(split, cache_dir)
    x = _load_cached(x_path, (n, SYNTH_D), np.dtype(np.float32))
    labels = _load_cached(lab_path, (n,), np.dtype(np.int64))
    if x is not None and labels is not None:
        return x, labels
    # Write to per-process temp names and rename, so concurrent callers never see half a file.
    x_tmp, lab_tmp = _tmp_name(x_path), _tmp_name(lab_path)
    try:
        out = np.lib.format.open_memmap(x_tmp, mode="w+", dtype=np.float32, shape=(n, SYNTH_D))
        g = np.random.default_rng([SYNTH_SEED, _SYNTH_STREAM[split]])
        _, labels = sample_mixture(g, n, synth_params(), out=out)
        out.flush()
        del out
        with open(lab_tmp, "wb") as f:
            np.save(f, labels)
        os.replace(lab_tmp, lab_path)
        os.replace(x_tmp, x_path)
    finally:
        for tmp in (x_tmp, lab_tmp):
            tmp.unlink(missing_ok=True)
    return np.load(x_path, mmap_mode="r"), np.load(lab_path, mmap_mode="r")


def _check_n(n: int, split: Split) -> None:
    """ValueError unless `split` is known and 1 <= n <= its size."""
    limit = SYNTH_SIZES.get(split)
    if limit is None:
        raise ValueError(f"split must be one of {tuple(SYNTH_SIZES)}, got {split!r}")
    if not 0 < n <= limit:
        raise ValueError(f"synth {split} has {limit} rows; n must be in 1..{limit}, got {n}")


def synth(n: int = SYNTH_SIZES["base"], split: Split = "base",
          cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """The first n rows of the synth1m base (or of its 1,000 queries): float32 (n, 128), read-only.

    The full split is generated once and cached as .npy (memory-mapped); since rows are i.i.d.,
    synth(200_000) is synth200k.
    """
    _check_n(n, split)
    return _synth_full(split, cache_dir)[0][:n]


def synth_labels(split: Split = "base", n: int | None = None,
                 cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Mixture component (0..999) of each synth row, for correlated filters: int64 (n,)."""
    n = SYNTH_SIZES.get(split, 0) if n is None else n
    _check_n(n, split)
    return _synth_full(split, cache_dir)[1][:n]


def synth_ground_truth(n_base: int, k: int = 100, metric: str = "l2",
                       cache_dir: str | os.PathLike | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of the 1,000 synth queries over synth(n_base): ids int64 (1000, k), distances
    float64 (Euclidean for l2). Brute force, float64 re-scored, cached on disk."""
    _check_n(n_base, "base")
    if metric not in METRICS or k < 1:
        raise ValueError(f"metric must be one of {METRICS} and k >= 1, got {metric!r}, k={k}")
    path = _cache_dir(cache_dir) / f"{_cache_prefix()}-gt-{metric}-n{n_base}-k{k}.npz"
    nq = SYNTH_SIZES["queries"]
    try:
        with np.load(path) as cached:
            ids, dists = cached["ids"], cached["dists"]
        if ids.shape == (nq, k) and dists.shape == (nq, k):
            return ids, dists
    except (OSError, ValueError, KeyError):
        pass
    ids, dists = exact_knn(synth(n_base, cache_dir=cache_dir),
                           synth(nq, "queries", cache_dir=cache_dir), k, metric)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, ids=ids, dists=dists)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return ids, dists


# ------------------------------------------------------------------- stand-in for siftsmall

_LIKE_SIFT_CLUSTERS = 64       # cluster structure so ANN indexes behave as on real descriptors
_LIKE_SIFT_GAMMA_SHAPE = 0.6   # SIFT bins are sparse and heavy-tailed: many zeros, a few large
_LIKE_SIFT_GAMMA_SCALE = 45.0  # puts the mean value near siftsmall's (~27)


def generate_like_siftsmall(seed: int = 0) -> Dataset:
    """A stand-in with siftsmall's shape: 10000 x 128 base, 100 queries, integer values in
    [0, 180], exact L2 top-100 gt (ties by smaller id). For machines without ../shared/data."""
    rng = np.random.default_rng(seed)
    centers = rng.gamma(_LIKE_SIFT_GAMMA_SHAPE, _LIKE_SIFT_GAMMA_SCALE,
                        size=(_LIKE_SIFT_CLUSTERS, SIFTSMALL_DIM))

    def draw(n: int) -> np.ndarray:
        c = rng.integers(0, _LIKE_SIFT_CLUSTERS, size=n)
        x = centers[c] * rng.gamma(4.0, 0.25, size=(n, SIFTSMALL_DIM))
        return np.clip(np.rint(x), 0.0, SIFTSMALL_MAX_VALUE).astype(np.float32)

    base, queries = draw(SIFTSMALL_N_BASE), draw(SIFTSMALL_N_QUERIES)
    gt, dists = exact_knn(base, queries, SIFTSMALL_GT_K, "l2")
    return Dataset("like-siftsmall", base, queries, gt, metric="l2", gt_dists=dists)
