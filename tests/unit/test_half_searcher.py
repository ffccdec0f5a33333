"""The float16 exact searcher encodes its rows into codes sized once, the codes faiss'
own add() makes, and answers as an index built by add() does."""

from __future__ import annotations

import numpy as np

from lookalike.server.backends.approximate import HalfSearcher
from lookalike.server.index import ann


def test_codes_written_in_place_are_the_codes_add_makes(monkeypatch):
    monkeypatch.setattr(ann, "BLOCK", 7)  # blocks that end inside the rows
    faiss = ann.faiss_module()
    rows = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float16)
    searcher = HalfSearcher(rows)
    added = faiss.IndexScalarQuantizer(16, faiss.ScalarQuantizer.QT_fp16)
    added.add(rows.astype(np.float32))
    assert searcher._index.ntotal == 50
    assert faiss.vector_to_array(searcher._index.codes).tobytes() == (
        faiss.vector_to_array(added.codes).tobytes()
    )
    queries = rows[:5].astype(np.float32) + 0.01
    distances, found = searcher.search(queries, k=4)
    squared, expected = added.search(queries, 4)
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_allclose(distances, np.sqrt(squared), rtol=1e-6)
    assert found[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_an_empty_matrix_holds_no_rows():
    assert HalfSearcher(np.zeros((0, 16), np.float16))._index.ntotal == 0
