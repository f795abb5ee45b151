"""Array files in (graphconv.arrays): every wrong .npy or .npz is one clean line naming
the file, refused before it costs memory; good ones come back as float32."""
import io
import os
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from graphconv import memory
from graphconv.arrays import load_npy, load_npz
from graphconv.errors import GraphconvError, shown_path

MESSAGE_CHARS = 2000


@pytest.fixture
def small_budget():
    """A 512 MB budget, restored after the test."""
    memory.set_memory_limit("512M")
    yield
    memory.set_memory_limit(None)


def refused(load, path, match: str) -> str:
    """The one-line message `load(path)` fails with, which must name the file."""
    with pytest.raises(GraphconvError) as err:
        load(path)
    message = str(err.value)
    assert match in message
    assert "\n" not in message and len(message) <= MESSAGE_CHARS
    assert message.startswith(shown_path(str(path)) + ":"), message
    return message


def npy_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def npz_bytes(**arrays) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def npy_header_only(shape, descr="<f4", data: bytes = b"") -> bytes:
    """A .npy whose header claims `shape`, followed by just `data`."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": False, "shape": shape})
    return out.getvalue() + data


def write_zip(path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


# ---- good files -------------------------------------------------------------------------------

def test_npz_round_trip_as_float32(tmp_path):
    weights = {"conv1.weight": np.arange(24, dtype=np.float64).reshape(2, 3, 2, 2),
               "conv1.bias": np.ones(2, np.float16)}
    np.savez_compressed(tmp_path / "w.npz", **weights)
    loaded = load_npz(tmp_path / "w.npz")
    assert sorted(loaded) == ["conv1.bias", "conv1.weight"]
    for key, array in weights.items():
        assert loaded[key].dtype == np.float32
        np.testing.assert_array_equal(loaded[key], array)


def test_npy_input_as_float32_in_either_order(tmp_path):
    array = np.asfortranarray(np.random.default_rng(0).standard_normal((1, 3, 5, 4)))
    np.save(tmp_path / "x.npy", array)
    loaded = load_npy(tmp_path / "x.npy")
    assert loaded.dtype == np.float32 and loaded.shape == (1, 3, 5, 4)
    np.testing.assert_allclose(loaded, array, rtol=1e-6)


# ---- bad .npz ---------------------------------------------------------------------------------

def good_npz(tmp_path, compressed=False) -> bytes:
    save = np.savez_compressed if compressed else np.savez
    save(tmp_path / "good.npz", **{"fc.weight": np.linspace(-1, 1, 400, dtype=np.float32).reshape(20, 20)})
    return (tmp_path / "good.npz").read_bytes()


@pytest.mark.parametrize("make,match", [
    (lambda tmp, p: None, "weights file not found"),
    (lambda tmp, p: p.write_bytes(b""), "the file is empty"),
    (lambda tmp, p: p.write_bytes(good_npz(tmp)[:300]), "damaged"),
    (lambda tmp, p: p.write_bytes(good_npz(tmp, compressed=True)[:-40]), "damaged"),
    (lambda tmp, p: p.write_bytes(npy_bytes(np.zeros(3, np.float32))), "a single .npy array, not an .npz"),
    (lambda tmp, p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100)), "not an .npz archive (a PNG image)"),
    (lambda tmp, p: p.write_text("conv1.weight: [1, 2]\n"), "not an .npz archive"),
    (lambda tmp, p: write_zip(p, {"notes.txt": b"hello"}), "member 'notes.txt' is not a .npy array"),
    (lambda tmp, p: write_zip(p, {"a.npy": b"not an array"}), "member 'a.npy' is not a .npy array"),
    (lambda tmp, p: write_zip(p, {"a.npy": npy_bytes(np.zeros(3, np.int64))}), "must be a float array, not int64"),
    (lambda tmp, p: write_zip(p, {"a.npy": npy_bytes(np.array([1.0, np.nan], np.float32))}),
     "weights 'a' has NaN values, the first at [1]"),
    (lambda tmp, p: write_zip(p, {"a.npy": npy_bytes(np.array([[0, 0], [np.inf, 0]], np.float32))}),
     "has inf values, the first at [1, 0]"),
    (lambda tmp, p: write_zip(p, {"a.npy": npy_bytes(np.array([1e300]))}), "inf values, the first at [0] (as float32"),
    (lambda tmp, p: write_zip(p, {"a.npy": npy_header_only((4,), data=bytes(8))}), "claims 16 bytes of data but only 8"),
    (lambda tmp, p: write_zip(p, {"a.npy": npy_header_only((1, 1, 100000, 100000), data=bytes(10000))}),
     "over the memory limit"),
    (lambda tmp, p: write_zip(p, {"a.npy": npy_bytes(np.zeros(1 << 20, np.float32))} | {
        f"b{i}.npy": npy_bytes(np.zeros(1 << 20, np.float32)) for i in range(200)}, zipfile.ZIP_DEFLATED),
     "over the memory limit"),
])
def test_bad_npz_is_one_clean_line(tmp_path, small_budget, make, match):
    path = tmp_path / "w.npz"
    make(tmp_path, path)
    refused(load_npz, path, match)


def test_npz_with_a_corrupt_member_fails_its_crc(tmp_path):
    data = bytearray(good_npz(tmp_path))
    data[data.index(b"\x93NUMPY") + 200] ^= 0xFF  # in the array data of the stored member
    (tmp_path / "w.npz").write_bytes(bytes(data))
    refused(load_npz, tmp_path / "w.npz", "damaged (Bad CRC-32")


def test_npz_zip_bomb_is_refused_before_inflating(tmp_path, monkeypatch):
    """8 MB of zeros deflate to a few KB: the zip directory's sizes are checked first."""
    np.savez_compressed(tmp_path / "w.npz", **{"a.weight": np.zeros(2 << 20, np.float32)})
    assert (tmp_path / "w.npz").stat().st_size < 100_000
    memory.set_memory_limit("1M")
    inflated = []
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: inflated.append(1))
    try:
        refused(load_npz, tmp_path / "w.npz", "weights (1 arrays) needs about 8.0 MB, over the memory limit")
    finally:
        memory.set_memory_limit(None)
    assert not inflated


def test_npz_object_array_is_never_unpickled(tmp_path):
    np.savez(tmp_path / "w.npz", **{"a.weight": np.array([object()], dtype=object)})
    refused(load_npz, tmp_path / "w.npz", "holds Python objects")


def test_memory_error_while_reading_is_a_clean_message(tmp_path, monkeypatch):
    good_npz(tmp_path)

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(np.lib.format, "read_array", no_memory)
    refused(load_npz, tmp_path / "good.npz", "not enough memory to load the weights")
    np.save(tmp_path / "x.npy", np.zeros(3, np.float32))
    refused(load_npy, tmp_path / "x.npy", "not enough memory to load the input array")


# ---- bad .npy ---------------------------------------------------------------------------------

@pytest.mark.parametrize("make,match", [
    (lambda p: None, "input file not found"),
    (lambda p: p.write_bytes(b""), "the file is empty"),
    (lambda p: p.write_bytes(npy_bytes(np.zeros((2, 3), np.float32))[:-5]), "claims 24 bytes of data but only 19"),
    (lambda p: p.write_bytes(npy_bytes(np.zeros(2, np.float32)) + b"xx"), "2 bytes follow its data"),
    (lambda p: p.write_bytes(npy_header_only((1, 1, 100000, 100000), data=bytes(10000))),
     "input array of shape 1x1x100000x100000 needs about 37.3 GB, over the memory limit"),
    (lambda p: p.write_bytes(npy_bytes(np.zeros(3, np.int32))), "input array must be a float array, not int32"),
    (lambda p: p.write_bytes(npy_bytes(np.zeros(3, np.uint8))),  # pixels saved as read: the way on, said
     "not uint8; --input takes the network's input values, after any preprocess: save x.astype(np.float32)"),
    (lambda p: p.write_bytes(npy_bytes(np.zeros(3, np.complex64))), "must be a float array, not complex64"),
    (lambda p: p.write_bytes(npy_bytes(np.zeros(3, [("a", "<f4")]))), "must be a float array"),
    (lambda p: p.write_bytes(npy_bytes(np.array([0, np.nan], np.float32))), "input array has NaN values"),
    (lambda p: p.write_bytes(npz_bytes(x=np.zeros(3))), "not a .npy array file (a zip archive such as an .npz"),
    (lambda p: p.write_bytes(b"\x93NUMPY\x09\x00garbage"), "unsupported .npy format version 9.0"),
    (lambda p: p.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': 'xx'}  \n"), "cannot read the input array"),
    (lambda p: p.write_bytes(npy_header_only((1, -1, 40, 16), data=bytes(2560))),  # said "claims -2560 bytes"
     "its .npy header is damaged (a shape of (1, -1, 40, 16))"),
    (lambda p: p.mkdir(), "it is a folder"),
    (lambda p: os.mkfifo(p), "not a regular file"),
    (lambda p: p.symlink_to("/dev/zero"), "not a regular file"),
])
@pytest.mark.usefixtures("fails_if_it_hangs")
def test_bad_npy_is_one_clean_line(tmp_path, small_budget, make, match):
    path = tmp_path / "x.npy"
    make(path)
    refused(load_npy, path, match)


@pytest.mark.parametrize("shape", [(0, 1, 40, 40), (1, 1, 0, 5), (0,)])
def test_an_empty_npy_is_refused_naming_its_shape(tmp_path, shape):
    """Nothing to run on: a batch of 0 images used to reach the kernels (ZeroDivisionError)."""
    np.save(tmp_path / "x.npy", np.zeros(shape, np.float32))
    shown = "x".join(map(str, shape))
    refused(load_npy, tmp_path / "x.npy", f"input array of shape {shown} is empty (an axis of size 0)")


def test_npy_what_names_the_array(tmp_path):
    refused(lambda p: load_npy(p, what="image"), tmp_path / "x.npy", "image file not found")


@pytest.mark.usefixtures("fails_if_it_hangs")
def test_npz_fifo_and_device_are_not_read(tmp_path):
    os.mkfifo(tmp_path / "w.npz")
    refused(load_npz, tmp_path / "w.npz", "not a regular file (a pipe or a device?)")
    refused(load_npz, "/dev/zero", "not a regular file")


# ---- fuzzing the bytes --------------------------------------------------------------------------

def _valid_files():
    npz = io.BytesIO()
    np.savez(npz, **{"conv.weight": np.linspace(-1, 1, 54, dtype=np.float32).reshape(2, 3, 3, 3),
                     "conv.bias": np.zeros(2, np.float32)})
    npz_deflated = io.BytesIO()
    np.savez_compressed(npz_deflated, **{"fc.weight": np.linspace(0, 1, 60, dtype=np.float64).reshape(6, 10)})
    return {"npz": npz.getvalue(), "npz_deflated": npz_deflated.getvalue(),
            "npy": npy_bytes(np.linspace(0, 1, 48, dtype=np.float32).reshape(1, 3, 4, 4))}


VALID = _valid_files()


@st.composite
def mutated_file(draw):
    kind = draw(st.sampled_from(sorted(VALID)))
    data = bytearray(VALID[kind])
    for _ in range(draw(st.integers(1, 6))):
        action = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if action == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "set" and data:
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, ord("9"), ord("("), ord(",")]))
        elif action == "cut":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del data[at:at + draw(st.integers(1, 16))]
    return kind, bytes(data)


@settings(max_examples=int(os.environ.get("GRAPHCONV_FUZZ_EXAMPLES", 150)), deadline=5000, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(mutated_file())
def test_mutated_array_files_load_or_fail_cleanly(tmp_path, small_budget, case):
    kind, data = case
    path = tmp_path / ("x.npy" if kind == "npy" else "w.npz")
    path.write_bytes(data)
    load = load_npy if kind == "npy" else load_npz
    try:
        result = load(path)
    except GraphconvError as err:
        message = str(err)
        assert "\n" not in message and len(message) <= MESSAGE_CHARS
        return
    arrays = [result] if kind == "npy" else list(result.values())
    assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in arrays)


def test_a_pytorch_batchnorm_counter_is_no_weight_and_is_left_out(tmp_path):
    """A state_dict saved with np.savez holds `<bn>.num_batches_tracked`, an int64
    scalar: it was refused as "must be a float array, not int64"."""
    path = tmp_path / "w.npz"
    np.savez(path, **{"bn.weight": np.ones(3, np.float32), "bn.num_batches_tracked": np.array(7, np.int64)})
    assert list(load_npz(path)) == ["bn.weight"]
    np.savez(path, **{"bn.num_batches_tracked": np.ones(3, np.int64)})  # not one counter: still refused
    with pytest.raises(GraphconvError, match="must be a float array, not int64"):
        load_npz(path)
