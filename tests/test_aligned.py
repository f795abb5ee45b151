"""aligned.empty/zeros: float32 arrays of any shape that start on a cache line, which the
CPU backend's activation buffers and the conv's packed weights are made of."""
import numpy as np
from hypothesis import given, settings, strategies as st

import graphconv
from graphconv.ops import aligned
from conftest import SPECS

shapes = st.one_of(st.integers(0, 5000), st.lists(st.integers(0, 40), min_size=1, max_size=4).map(tuple))


@settings(max_examples=60, deadline=None)
@given(shape=shapes)
def test_empty_and_zeros_start_on_a_cache_line(shape):
    expected = (shape,) if isinstance(shape, int) else shape
    for make in (aligned.empty, aligned.zeros):
        array = make(shape)
        assert array.shape == expected
        assert array.dtype == np.float32 and array.flags.c_contiguous and array.flags.writeable
        assert aligned.is_aligned(array)
    assert not aligned.zeros(shape).any()


def test_arrays_do_not_overlap():
    """Each array owns its block: writing one leaves another made next to it alone."""
    first, second = aligned.empty(1000), aligned.empty(1000)
    first.fill(1.0)
    second.fill(2.0)
    assert (first == 1.0).all() and (second == 2.0).all()


def test_a_cpu_run_keeps_its_activations_and_output_aligned():
    model = graphconv.compile_model(SPECS / "lenet.yaml")
    executor = model.executor("cpu")
    out = executor.run(np.zeros((1, 1, 32, 32), np.float32))
    assert aligned.is_aligned(out)
    plan = executor.plan(1, 32, 32)
    views, _ = executor._bound_calls((1, 32, 32), plan)
    assert views and all(aligned.is_aligned(view) for view in views.values())
