"""Threads and modes: readers never see a half-applied write while a writer writes; async
durability; opening a folder that is not a database."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import unidb
from unidb.errors import UnidbError

from conftest import items_rows, items_schema


def test_reader_threads_see_whole_batches_while_writing(db):
    t = db.create_table("t", items_schema())
    t.add(items_rows(100))
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer():
        try:
            for i in range(1, 40):
                t.add(items_rows(100, start=100 * i, seed=i))
                if i % 5 == 0:
                    t.delete(where=f"id < {100 * (i - 4)} AND id >= {100 * (i - 5)}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            stop.set()

    def reader():
        try:
            while not stop.is_set():
                n = len(t)
                ids = t.to_arrow(columns=["id"]).column("id").to_numpy()
                assert len(ids) % 100 == 0                  # whole batches only
                assert len(np.unique(ids)) == len(ids)
                hits = t.search(np.zeros(8, np.float32)).where("price < 250").limit(5).to_list()
                assert all(h["price"] < 250 for h in hits)
                assert n >= 100
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert len(t) == 4000 - 7 * 100


def test_async_durability_roundtrip(db_path):
    db = unidb.connect(db_path, durability="async")
    t = db.create_table("t", items_schema())
    t.add(items_rows(500))
    t.delete(ids=[1, 2, 3])
    db.close()
    db = unidb.connect(db_path)
    assert len(db.open_table("t")) == 497
    db.close()
    with pytest.raises(UnidbError, match="durability"):
        unidb.connect(db_path, durability="sometimes")


def test_refuses_folder_that_is_not_a_database(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("mine")
    with pytest.raises(UnidbError, match="not a unidb database"):
        unidb.connect(tmp_path / "stuff")
    with pytest.raises(unidb.NotFoundError):
        unidb.connect(tmp_path / "missing", read_only=True)


def test_closed_database_refuses_work(db_path):
    db = unidb.connect(db_path)
    t = db.create_table("t", items_schema())
    db.close()
    with pytest.raises(UnidbError, match="closed"):
        db.table_names()
    with pytest.raises(UnidbError, match="closed"):
        t.add(items_rows(1))
