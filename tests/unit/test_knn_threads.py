"""Exact k-NN on one OpenMP thread for small galleries: the same answer as on many, and
the calling thread's OpenMP setting left as it was."""

from __future__ import annotations

import numpy as np
from threadpoolctl import ThreadpoolController

from lookalike.server.backends.knn import ONE_THREAD_ROWS, KnnSearcher


def openmp_threads() -> list[int]:
    return [pool["num_threads"] for pool in ThreadpoolController().select(user_api="openmp").info()]


def test_small_and_large_galleries_find_the_numpy_answer_and_leave_openmp_as_it_was():
    rng = np.random.default_rng(7)
    before = openmp_threads()
    assert before  # scikit-learn's OpenMP runtime is loaded, so the check means something
    for rows in (300, ONE_THREAD_ROWS):  # one thread; as many as scikit-learn takes
        gallery = rng.standard_normal((rows, 64), dtype=np.float32)
        queries = rng.standard_normal((5, 64), dtype=np.float32)
        distances, found = KnnSearcher(gallery, "brute").search(queries, 4)
        exact = np.linalg.norm(queries[:, None, :] - gallery[None, :, :], axis=2)
        np.testing.assert_array_equal(found, np.argsort(exact, axis=1)[:, :4])
        np.testing.assert_allclose(distances, np.sort(exact, axis=1)[:, :4], rtol=1e-4)
        assert openmp_threads() == before
