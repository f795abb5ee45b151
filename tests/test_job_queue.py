"""The shared job counter the CPU kernels take their jobs from (graphconv/ops/job_queue.py)."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st
from numba import njit, prange

from graphconv.ops.job_queue import next_job


@njit(cache=True, parallel=True)
def _take_every_job(jobs, threads, takers, work):
    """takers[job] += 1 for each time a thread takes the job; work[t] counts thread t's jobs."""
    queue = np.zeros(1, np.int64)
    for t in prange(threads):
        while True:
            job = next_job(queue)
            if job >= jobs:
                break
            takers[job] += 1
            work[t] += 1


@settings(max_examples=40, deadline=None)
@given(jobs=st.integers(0, 3000), threads=st.integers(1, 5))
def test_every_job_is_taken_by_exactly_one_thread(jobs, threads):
    takers, work = np.zeros(jobs, np.int64), np.zeros(threads, np.int64)
    _take_every_job(jobs, threads, takers, work)
    np.testing.assert_array_equal(takers, 1)
    assert work.sum() == jobs
