"""CUDA kernels against the numpy references, every registered op on each of its
examples. Without a GPU they run on numba's CUDA simulator (conftest sets
NUMBA_ENABLE_CUDASIM=1), which is why the examples are tiny;
`GRAPHCONV_TEST_GPU=1 pytest tests/test_cuda.py` runs them on a real GPU."""
import numpy as np
import pytest

import graphconv
from graphconv.errors import GraphconvError
from graphconv.ops import all_ops
from graphconv.runtime import cuda_status, run_reference
from graphconv.spec import normalize_params
from conftest import SPECS, random_input

pytestmark = pytest.mark.skipif(cuda_status() is not None, reason=f"CUDA unusable: {cuda_status()}")

EXAMPLES = [pytest.param(op, example, id=f"{op.name}-{i}")
            for op in all_ops() for i, example in enumerate(op.examples)]


@pytest.mark.parametrize("opdef,example", EXAMPLES)
def test_cuda_kernel_matches_reference(opdef, example, rng):
    """An op may have no CUDA kernel (running it there is a clear error): that skips."""
    from graphconv import cuda_backend
    try:
        kernel = opdef.kernel("cuda")
    except GraphconvError as err:
        pytest.skip(str(err))
    params = normalize_params(opdef, example.params)
    xs = [random_input(rng, (2, *s)) for s in example.inputs]
    weights = opdef.seeded_weights(params, example.inputs, rng)
    out = kernel(params, cuda_backend.upload_weights(weights), [cuda_backend.to_device(x) for x in xs])
    np.testing.assert_allclose(cuda_backend.to_host(out), opdef.reference(params, weights, xs),
                               rtol=1e-4, atol=1e-5)


def test_whole_network_on_cuda(rng):
    model = graphconv.compile_model(SPECS / "tinydag.yaml")
    x = random_input(rng, (1, 3, 28, 24))
    np.testing.assert_allclose(model.run(x, device="cuda"), run_reference(model.graph, x), rtol=1e-4, atol=1e-5)


def test_cuda_unavailable_is_a_clear_user_error(monkeypatch):
    from graphconv import runtime
    monkeypatch.setattr(runtime, "cuda_status", lambda: "no CUDA GPU was found")
    with pytest.raises(GraphconvError, match="--device cuda: no CUDA GPU was found"):
        runtime.resolve_device("cuda")
    assert runtime.resolve_device("auto") == "cpu"
