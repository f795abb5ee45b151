"""CUDA kernels against the numpy references. Without a GPU they run on numba's CUDA
simulator (conftest sets NUMBA_ENABLE_CUDASIM=1), on small shapes because it is slow;
`GRAPHCONV_TEST_GPU=1 pytest tests/test_cuda.py` runs them on a real GPU."""
import numpy as np
import pytest

import graphconv
from graphconv.errors import GraphconvError
from graphconv.ops import get_op
from graphconv.runtime import cuda_status, run_reference
from graphconv.spec import normalize_params
from conftest import SPECS, random_input

pytestmark = pytest.mark.skipif(cuda_status() is not None, reason=f"CUDA unusable: {cuda_status()}")

CASES = [
    ("conv", dict(out_channels=3, kernel_size=3), [(2, 6, 5)]),
    ("conv", dict(out_channels=4, kernel_size=[2, 3], stride=2, padding=1, dilation=[2, 1], groups=2,
                  activation="relu"), [(4, 7, 6)]),
    ("conv", dict(out_channels=18, kernel_size=1, bias=False), [(17, 3, 2)]),  # K and O past one tile
    ("fc", dict(out_features=5), [(3, 2, 3)]),
    ("maxpool", dict(kernel_size=3, stride=2, padding=1), [(2, 7, 6)]),
    ("avgpool", dict(kernel_size=2, dilation=2), [(2, 6, 7)]),
    ("lrn", dict(size=3, alpha=0.1, beta=0.75, k=2.0), [(5, 3, 2)]),
    ("softmax", {}, [(4, 2, 3)]),
    ("relu", {}, [(3, 2, 4)]),
    ("dropout", {}, [(3, 2, 4)]),
    ("add", {}, [(2, 3, 3)] * 3),
    ("concat", {}, [(2, 3, 3), (1, 3, 3)]),
]


@pytest.mark.parametrize("name,raw,in_shapes", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_cuda_kernel_matches_reference(name, raw, in_shapes, rng):
    from graphconv import cuda_backend
    opdef = get_op(name)
    params = normalize_params(opdef, raw)
    xs = [random_input(rng, (2, *s)) for s in in_shapes]
    weights = ({k: random_input(rng, s) for k, s in opdef.weight_shapes(params, in_shapes).items()}
               if opdef.has_weights else {})
    out = opdef.kernel("cuda")(params, cuda_backend.upload_weights(weights), [cuda_backend.to_device(x) for x in xs])
    np.testing.assert_allclose(cuda_backend.to_host(out), opdef.reference(params, weights, xs), rtol=1e-4, atol=1e-5)


def test_every_op_has_a_cuda_kernel():
    from graphconv.ops import all_ops
    assert {op.name for op in all_ops()} == {name for name, _, _ in CASES}
    for op in all_ops():
        assert callable(op.kernel("cuda"))


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
