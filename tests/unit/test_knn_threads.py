"""Exact k-NN on one OpenMP thread for small galleries: the same answer as on many, and
the calling thread's OpenMP setting left as it was."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import ThreadpoolController

from lookalike.server.backends.knn import ONE_THREAD_ROWS, KnnSearcher, openmp_threads


def openmp_counts() -> list[int]:
    return [pool["num_threads"] for pool in ThreadpoolController().select(user_api="openmp").info()]


def faiss_count() -> int:
    return pytest.importorskip("faiss").omp_get_max_threads()


@pytest.mark.parametrize(
    ("algorithm", "counts"), [("brute", openmp_counts), ("faiss", faiss_count)]
)
def test_small_and_large_galleries_find_the_numpy_answer_and_leave_openmp_as_it_was(
    algorithm, counts
):
    rng = np.random.default_rng(7)
    before = counts()
    assert before  # the OpenMP runtime is loaded, so the check means something
    for rows in (300, ONE_THREAD_ROWS):  # one thread; as many as the library takes
        gallery = rng.standard_normal((rows, 64), dtype=np.float32)
        queries = rng.standard_normal((5, 64), dtype=np.float32)
        distances, found = KnnSearcher(gallery, algorithm).search(queries, 4)
        exact = np.linalg.norm(queries[:, None, :] - gallery[None, :, :], axis=2)
        np.testing.assert_array_equal(found, np.argsort(exact, axis=1)[:, :4])
        np.testing.assert_allclose(distances, np.sort(exact, axis=1)[:, :4], rtol=1e-4)
        assert counts() == before


def test_openmp_threads_sets_this_threads_count_and_gives_it_back():
    before = openmp_counts()
    other = before[0] + 1
    with openmp_threads(other):
        assert openmp_counts() == [other] * len(before)
    assert openmp_counts() == before


def test_openmp_threads_sets_faiss_count_and_gives_it_back():
    before = faiss_count()
    with openmp_threads(before + 1, faiss=True):
        assert faiss_count() == before + 1
    assert faiss_count() == before
