"""The approximate structures' parameters, chosen without building anything."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.server.index import ann
from lookalike.server.index.store import InvalidIndexError, Layout


def test_ivf_pq_codes_one_per_four_dimensions_and_refuses_others():
    assert ann._pq_codes(128) == 64 and ann._pq_codes(2048) == 1024
    for dim in (129, 130):  # not a multiple of 2; an odd number of codes
        with pytest.raises(InvalidIndexError, match="ivf-sq8"):
            ann.build(np.zeros((64, dim), np.float32), Layout(index_type="ivf-pq", lists=1))


def test_ivf_lists_and_breadth_follow_the_row_count():
    small = ann.resolved(Layout(index_type="ivf-pq"), 1_000)
    large = ann.resolved(Layout(index_type="ivf-pq"), 10_000_000)
    assert (small.lists, small.breadth) == (1_000 // ann.MIN_ROWS_PER_LIST, 8)
    assert (large.lists, large.breadth) == (ann.MAX_LISTS, ann.MAX_LISTS // 8)
