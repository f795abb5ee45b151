"""fast_math's vectorisable erf, tanh, sigmoid, expm1, exp, softplus and mish against float64 libm,
everywhere a float32 can be: the activations' accuracy rests on these bounds."""
import math

import numpy as np
import pytest
from numba import njit

from graphconv.ops.fast_math import erf32, exp32, expm1_nonpositive32, mish32, sigmoid32, softplus32, tanh32


def _over_array(scalar):
    """A compiled loop applying the scalar function `scalar` to each value of x into out."""
    @njit
    def apply(x, out):
        for i in range(x.size):
            out[i] = scalar(x[i])
    return apply


_apply_erf, _apply_tanh, _apply_sigmoid = (_over_array(f) for f in (erf32, tanh32, sigmoid32))


def _exact_sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v)) if v > -700 else 0.0


CASES = [(_apply_erf, math.erf, 4.5e-7), (_apply_tanh, math.tanh, 3.5e-7), (_apply_sigmoid, _exact_sigmoid, 2.5e-7)]
GRID = np.concatenate([np.linspace(-40, 40, 400_001), np.geomspace(1e-30, 1e3, 2000), -np.geomspace(1e-30, 1e3, 2000),
                       [0.0, -0.0, 3.4e38, -3.4e38]]).astype(np.float32)


@pytest.mark.parametrize("apply,exact,bound", CASES, ids=["erf", "tanh", "sigmoid"])
def test_within_its_bound_of_float64_everywhere(apply, exact, bound):
    got = np.empty_like(GRID)
    apply(GRID, got)
    want = np.array([exact(float(v)) for v in GRID])
    assert np.abs(got - want).max() <= bound
    assert np.all(np.abs(got) <= 1.0)  # never past the function's range, which gelu and silu rely on


_apply_expm1 = _over_array(expm1_nonpositive32)


def test_expm1_is_within_float32_rounding_of_libm_on_its_domain():
    """Relative error too: an ELU near 0 is its expm1, about v itself."""
    x = np.concatenate([np.linspace(-40, 0, 200_001), -np.geomspace(1e-30, 1e3, 2000),
                        [0.0, -0.0, -3.4e38]]).astype(np.float32)
    got = np.empty_like(x)
    _apply_expm1(x, got)
    want = np.array([math.expm1(float(v)) for v in x])
    assert np.all(np.abs(got - want) <= 3e-7 * np.maximum(np.abs(want), 1e-38))
    _apply_expm1(np.array([-np.inf], np.float32), got[:1])
    assert got[0] == -1.0


_apply_exp = _over_array(exp32)


_apply_mish = _over_array(mish32)


def test_exp_is_within_an_ulp_where_it_is_normal_and_zero_below():
    x = np.concatenate([np.linspace(-87, 88, 1_000_001), np.geomspace(1e-30, 1, 1000), -np.geomspace(1e-30, 1, 1000),
                        [0.0, -0.0]]).astype(np.float32)
    got = np.empty_like(x)
    _apply_exp(x, got)
    want = np.exp(x.astype(np.float64))
    assert np.all(np.abs(got - want) <= 1.2e-7 * want)
    edges = np.array([-87.01, -1e4, -np.inf, 88.5, np.inf], np.float32)
    got = np.empty_like(edges)
    _apply_exp(edges, got)
    assert got.tolist()[:3] == [0.0, 0.0, 0.0]
    assert got[3] == got[4] == np.float32(math.exp(88.0))  # clamped: mish never asks past 20


_apply_softplus = _over_array(softplus32)


def test_softplus_is_within_float32_rounding_of_float64():
    """Relative: far below 0 softplus is e^v, tiny; above, v plus a tiny part."""
    x = np.concatenate([np.linspace(-86, 100, 1_000_001), np.geomspace(1e-30, 1e3, 2000),
                        -np.geomspace(1e-30, 86, 2000), [0.0, -0.0, 3.4e38]]).astype(np.float32)
    got = np.empty_like(x)
    _apply_softplus(x, got)
    want = np.logaddexp(0.0, x.astype(np.float64))
    assert np.all(np.abs(got - want) <= 3e-7 * want)
    far = np.array([-90.0, -np.inf, np.inf], np.float32)
    got = np.empty_like(far)
    _apply_softplus(far, got)
    assert got.tolist() == [0.0, 0.0, np.inf]


def test_mish_is_within_float32_rounding_of_float64_and_keeps_its_limits():
    """Relative error too (mish's negative tail is x e^x, tiny): 3e-7 from -86 up; below,
    its values are under 1e-35 and come out as 0; +-inf as PyTorch gives them."""
    x = np.concatenate([np.linspace(-86, 100, 1_000_001), np.geomspace(1e-30, 1e3, 2000),
                        -np.geomspace(1e-30, 86, 2000), [0.0, -0.0]]).astype(np.float32)
    got = np.empty_like(x)
    _apply_mish(x, got)
    v = x.astype(np.float64)
    want = v * np.tanh(np.logaddexp(0.0, v))
    assert np.all(np.abs(got - want) <= 3e-7 * np.abs(want) + 1e-37)
    far = np.array([-90.0, -3.4e38, 3.4e38, np.inf], np.float32)
    got = np.empty_like(far)
    _apply_mish(far, got)
    assert got.tolist() == [0.0, 0.0, far[2], np.inf]


@pytest.mark.parametrize("apply", [case[0] for case in CASES], ids=["erf", "tanh", "sigmoid"])
def test_infinities_saturate(apply):
    x = np.array([np.inf, -np.inf], np.float32)
    got = np.empty_like(x)
    apply(x, got)
    low = 0.0 if apply is _apply_sigmoid else -1.0
    assert got.tolist() == [1.0, low]


def test_every_fused_activation_has_its_named_code():
    """The kernels compare a conv's activation code with fast_math's names (`RELU6`), not
    literals: an entry added to FUSED without its name there fails here, by name."""
    from graphconv.ops import fast_math
    from graphconv.ops.activations import FUSED, fused_code
    missing = [name for name in FUSED if getattr(fast_math, name.upper(), None) != fused_code(name)]
    assert not missing, f"fast_math.py lacks {', '.join(f'{n.upper()} = fused_code({n!r})' for n in missing)}"
