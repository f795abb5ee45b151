"""The one-loop kernel behind concat and a batchnorm over several inputs, against numpy:
any number of inputs, each stored NCHW or channels-last, into an output stored either
way, copied or normalised and activated; and a call bound to its arrays (as a plan
binds it) reading their new values on every run, including an input it must copy."""
import numpy as np
from hypothesis import given, settings, strategies as st

from graphconv.ops.activations import FUSED, fused_code, fused_reference
from graphconv.ops.channel_stack import bind_stack, stack_channels


def _stored(a: np.ndarray, channels_last: bool) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2) if channels_last else a


def _expected(xs, terms, activation):
    stacked = np.concatenate(xs, axis=1)
    if terms is None:
        return stacked
    mean, scale, beta = (t[None, :, None, None] for t in terms)
    return fused_reference(activation, (stacked - mean) * scale + beta)


@settings(max_examples=60, deadline=None)
@given(channels=st.lists(st.integers(1, 9), min_size=1, max_size=5), h=st.integers(1, 5), w=st.integers(1, 6),
       batch=st.integers(1, 3), storage=st.lists(st.booleans(), min_size=6, max_size=6),
       activation=st.sampled_from(("copy",) + FUSED), seed=st.integers(0, 2**16))
def test_stacking_matches_numpy(channels, h, w, batch, storage, activation, seed):
    rng = np.random.default_rng(seed)
    xs = [_stored(rng.standard_normal((batch, c, h, w)).astype(np.float32), storage[i])
          for i, c in enumerate(channels)]
    total = sum(channels)
    terms = None if activation == "copy" else (
        rng.standard_normal(total).astype(np.float32), rng.uniform(0.5, 2, total).astype(np.float32),
        rng.standard_normal(total).astype(np.float32))
    code = 0 if terms is None else fused_code(activation)
    out = _stored(np.full((batch, total, h, w), np.nan, np.float32), storage[5])
    stack_channels(xs, out, terms, code)
    np.testing.assert_allclose(out, _expected(xs, terms, activation), rtol=1e-5, atol=1e-5)

    bound = bind_stack(xs, out, terms, code)
    for x in xs:
        x[...] = rng.standard_normal(x.shape)  # in place: the bound call must read these
    bound()
    np.testing.assert_allclose(out, _expected(xs, terms, activation), rtol=1e-5, atol=1e-5)


def test_a_copy_is_exact_down_to_the_sign_of_zero():
    xs = [np.full((1, 2, 2, 2), -0.0, np.float32), np.full((1, 1, 2, 2), np.nan, np.float32)]
    out = np.zeros((1, 3, 2, 2), np.float32)
    stack_channels(xs, out)
    assert np.signbit(out[:, :2]).all() and np.isnan(out[:, 2]).all()
