"""Shared fixtures: temporary databases and the real datasets in ../shared/data (when present)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import unidb

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("UNIDB_DATA", REPO.parent / "shared" / "data"))


def data_dir(name: str) -> Path:
    """The folder of a shared dataset, or skip the test with the reason."""
    p = DATA / name
    if not p.is_dir():
        pytest.skip(f"dataset {name!r} not found at {p} (the shared data folder is absent)")
    return p


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "test.unidb"


@pytest.fixture
def db(db_path):
    d = unidb.connect(db_path)
    yield d
    d.close()


def items_schema(dim: int = 8, metric: str = "l2") -> dict:
    return {
        "id": unidb.Int64(primary_key=True),
        "price": unidb.Float64(),
        "category": unidb.String(),
        "year": unidb.Int64(nullable=True),
        "active": unidb.Bool(),
        "emb": unidb.Vector(dim, metric=metric),
    }


def items_rows(n: int, dim: int = 8, start: int = 0, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    year = rng.integers(1990, 2025, n).astype(object)
    year[rng.random(n) < 0.1] = None
    return {
        "id": np.arange(start, start + n),
        "price": np.round(rng.uniform(0, 500, n), 2),
        "category": rng.choice(["a", "b", "c", "d"], n).tolist(),
        "year": list(year),
        "active": (rng.random(n) < 0.5).tolist(),
        "emb": rng.standard_normal((n, dim)).astype(np.float32),
    }


def read_fvecs(path: Path) -> np.ndarray:
    a = np.fromfile(path, dtype="int32")
    d = a[0]
    return a.reshape(-1, d + 1)[:, 1:].view("float32").copy()
