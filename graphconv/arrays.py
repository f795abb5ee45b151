"""Array files in: `.npy` inputs and `.npz` weights, refused cleanly when they are wrong.

A weights or input file comes from anywhere, so everything about it is checked before
it costs anything, and every failure is a one-line GraphconvError naming the file:

* only regular files are opened (a FIFO or `/dev/zero` would block or never end), and
  the first bytes say what a wrong file is (a `.npy` named `.npz`, a PNG, a zip);
* a `.npy` header (or each `.npz` member's) is read first: its dtype must be a float
  (never objects: nothing is unpickled), and its shape's size goes through
  `graphconv.memory.check_fits` before the data is read, so a 10 KB file that claims a
  40 GB array is refused without allocating it; a header that claims more or fewer bytes
  than the file (or zip member) really holds is refused too;
* a compressed `.npz` is checked against the budget by the uncompressed sizes its zip
  directory lists before anything is inflated (zipfile never inflates past those sizes,
  and a member that inflates to less fails its CRC), so a zip bomb costs nothing;
* NaN and inf values are refused (they would silently turn every score into NaN),
  after conversion to float32, so float64 values beyond float32's range are caught too;
* damaged archives (bad CRC, truncated data, broken deflate streams) and MemoryError
  become clean messages.

Arrays come back as float32, the only dtype the kernels use.
"""
from __future__ import annotations

import math
import os
import stat
import struct
import tokenize
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from graphconv.errors import GraphconvError, MissingFile, shown
from graphconv.memory import check_fits

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
MAX_NPZ_MEMBERS = 100_000  # a network has at most a few thousand weight arrays
FINITE_CHECK_CHUNK = 1 << 20  # elements per step of the NaN/inf scan, so it needs no big mask

_MAGIC_HINTS = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (NPY_MAGIC, "a .npy array"),
    (ZIP_MAGIC, "a zip archive such as an .npz"),
    (EMPTY_ZIP_MAGIC, "an empty zip archive"),
    (b"\xff\xfe", "UTF-16 text"),
    (b"\xfe\xff", "UTF-16 text"),
)
_ZIP_DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError, struct.error, NotImplementedError)


def open_regular_file(path: str | os.PathLike, what: str, not_found: str | None = None) -> BinaryIO:
    """`path` opened for binary reading, only if it is a regular file.

    It is opened non-blocking and checked with fstat on the open descriptor, so a FIFO
    (which would block until a writer comes) or a device such as /dev/zero (which never
    ends) is refused without reading it, and the check and the read see the same file."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        if os.path.islink(path):  # the name is there to see: "not found" read as a typo
            raise MissingFile(f"is a broken link: what it points to, {os.readlink(path)}, is not there",
                              file=str(path)) from None
        raise MissingFile(not_found or f"{what} not found", file=str(path)) from None
    except OSError as err:
        raise GraphconvError(f"cannot read {what}: {err.strerror}", file=str(path)) from None
    except ValueError:  # an embedded NUL byte
        raise GraphconvError(f"cannot read {what}: the file name has a NUL byte", file=str(path)) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise GraphconvError(f"cannot read {what}: it is a folder", file=str(path))
        if not stat.S_ISREG(mode):
            raise GraphconvError(f"cannot read {what}: not a regular file (a pipe or a device?)",
                                 file=str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_kind(head: bytes) -> str | None:
    """What a file's first bytes say it is ("a PNG image", ...), or None."""
    return next((kind for magic, kind in _MAGIC_HINTS if head.startswith(magic)), None)


# ---- .npy ----------------------------------------------------------------------------------

INPUT_VALUES_HINT = ("; --input takes the network's input values, after any preprocess: save "
                     "x.astype(np.float32) scaled as the network expects, or save the pixels as an image "
                     "(PNG, TIFF) for --image, which applies the spec's preprocess")


def load_npy(path: str | os.PathLike, *, what: str = "input") -> np.ndarray:
    """A float `.npy` array as float32; `what` names it in messages ("input file not found")."""
    path = Path(path)
    with open_regular_file(path, f"{what} file") as fp:
        head = _peek(fp, path, what)
        if not head.startswith(NPY_MAGIC):
            kind = file_kind(head)
            detail = f" ({kind}; save a single array with np.save)" if kind else ""
            raise GraphconvError(f"{what} is not a .npy array file{detail}", file=str(path))
        try:
            dtype, shape, fortran = npy_header(fp, f"{what} array", path)
            _check_float_dtype(dtype, f"{what} array", path, INPUT_VALUES_HINT if what == "input" else "")
            if 0 in shape:  # nothing to run on; a batch of 0 would reach the kernels (a division by zero)
                raise GraphconvError(f"{what} array of shape {_fmt_shape(shape)} is empty (an axis of size 0)",
                                     file=str(path))
            check_fits(_loaded_bytes(dtype, shape), f"{what} array of shape {_fmt_shape(shape)}", file=str(path))
            real = os.fstat(fp.fileno()).st_size - fp.tell()
            _check_claim(_claimed_bytes(dtype, shape), real, f"{what} array", path)
            fp.seek(0)
            array = np.lib.format.read_array(fp, allow_pickle=False)
            return _finite_float32(array, f"{what} array", path)
        except MemoryError:
            raise GraphconvError(f"not enough memory to load the {what} array", file=str(path)) from None
        except (ValueError, OSError, EOFError) as err:
            raise GraphconvError(f"cannot read the {what} array: {_reason(err)}", file=str(path)) from None


# ---- .npz ----------------------------------------------------------------------------------

def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an `.npz` weights archive (as `np.savez` writes it), as float32,
    keyed by member name without `.npy`."""
    path = Path(path)
    with open_regular_file(path, "weights file") as fp:
        head = _peek(fp, path, "weights")
        if head.startswith(NPY_MAGIC):
            raise GraphconvError("cannot read weights: this is a single .npy array, not an .npz archive "
                                 "of named arrays (save weights with np.savez)", file=str(path))
        if not head.startswith((ZIP_MAGIC, EMPTY_ZIP_MAGIC)):
            kind = file_kind(head)
            raise GraphconvError(f"cannot read weights: not an .npz archive{f' ({kind})' if kind else ''}",
                                 file=str(path))
        try:
            _check_member_count(fp, path)
            with zipfile.ZipFile(fp) as archive:
                members = _npz_members(archive, path)
                total = sum(info.file_size for info in members.values())
                check_fits(total, f"weights ({len(members)} arrays)", file=str(path))
                return {key: _read_member(archive, info, key, path) for key, info in members.items()
                        if not _is_bookkeeping(archive, info, key, path)}
        except MemoryError:
            raise GraphconvError("not enough memory to load the weights", file=str(path)) from None
        except _ZIP_DAMAGE as err:
            raise GraphconvError(f"cannot read weights: the archive is damaged ({_reason(err)})",
                                 file=str(path)) from None
        except (ValueError, OSError) as err:
            raise GraphconvError(f"cannot read weights: {_reason(err)}", file=str(path)) from None


def _check_member_count(fp: BinaryIO, path: Path) -> None:
    """Refuse an archive listing absurdly many members before zipfile builds an object
    for each (its directory entries are 46 bytes; the objects are ten times that)."""
    end_record = getattr(zipfile, "_EndRecData", None)  # private, but in every CPython 3
    if end_record is None:
        return
    record = end_record(fp)
    if record is not None and record[4] > MAX_NPZ_MEMBERS:  # [4]: _ECD_ENTRIES_TOTAL
        raise GraphconvError(f"cannot read weights: the archive lists {record[4]} arrays, over "
                             f"{MAX_NPZ_MEMBERS}", file=str(path))
    fp.seek(0)


def _npz_members(archive: zipfile.ZipFile, path: Path) -> dict[str, zipfile.ZipInfo]:
    """The archive's members by weight key; every one must be an unencrypted `.npy`."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            raise GraphconvError(f"cannot read weights: member {shown(info.filename)} is not a .npy "
                                 "array (an .npz holds only .npy members)", file=str(path))
        if info.flag_bits & 0x1:
            raise GraphconvError(f"cannot read weights: member {shown(info.filename)} is encrypted",
                                 file=str(path))
        key = info.filename[:-len(".npy")]
        if key in members:
            raise GraphconvError(f"cannot read weights: the archive has {shown(key)} twice", file=str(path))
        members[key] = info
    return members


BOOKKEEPING = (".num_batches_tracked",)
"""Keys a PyTorch state_dict saved with np.savez holds beside the weights that are no
weights: BatchNorm's count of training batches, an int64 scalar. Read as weights they
were refused ("must be a float array, not int64"); they are left out."""


def _is_bookkeeping(archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, path: Path) -> bool:
    """Whether member `key` is a counter of BOOKKEEPING: so named, and one integer."""
    if not key.endswith(BOOKKEEPING):
        return False
    with archive.open(info) as member:
        if member.read(len(NPY_MAGIC)) != NPY_MAGIC:
            return False
        member.seek(0)
        dtype, shape, _ = npy_header(member, f"weights {shown(key)}", path)
    return dtype.kind in "iu" and math.prod(shape) == 1


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, path: Path) -> np.ndarray:
    """One member: its header checked against the zip's own size for it, then its data."""
    what = f"weights {shown(key)}"
    with archive.open(info) as member:
        if member.read(len(NPY_MAGIC)) != NPY_MAGIC:
            raise GraphconvError(f"cannot read weights: member {shown(info.filename)} is not a .npy array",
                                 file=str(path))
        member.seek(0)
        dtype, shape, _ = npy_header(member, what, path)
        _check_float_dtype(dtype, what, path)
        check_fits(_loaded_bytes(dtype, shape), f"{what} of shape {_fmt_shape(shape)}", file=str(path))
        _check_claim(_claimed_bytes(dtype, shape), info.file_size - member.tell(), what, path)
    with archive.open(info) as member:
        array = np.lib.format.read_array(member, allow_pickle=False)
        member.read(1)  # reach the end of the member, where zipfile checks its CRC
    return _finite_float32(array, what, path)


# ---- shared checks ----------------------------------------------------------------------------

def _peek(fp: BinaryIO, path: Path, what: str) -> bytes:
    head = fp.read(16)
    if not head:
        raise GraphconvError(f"cannot read {what}: the file is empty", file=str(path))
    fp.seek(0)
    return head


def npy_header(fp: BinaryIO, what: str, path: Path) -> tuple[np.dtype, tuple[int, ...], bool]:
    """(dtype, shape, fortran_order) from a `.npy` header, without reading the data."""
    version = np.lib.format.read_magic(fp)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise GraphconvError(f"{what}: unsupported .npy format version {version[0]}.{version[1]} "
                             "(graphconv reads 1.0 and 2.0, what np.save writes)", file=str(path))
    try:
        with warnings.catch_warnings():  # numpy warns about "Python 2" headers: damaged ones, here
            warnings.simplefilter("ignore", UserWarning)
            shape, fortran, dtype = readers[version](fp)
    except (tokenize.TokenError, SyntaxError) as err:  # numpy's header parser lets these through
        raise GraphconvError(f"cannot read {what}: its .npy header is damaged ({_reason(err)})",
                             file=str(path)) from None
    if any(int(v) < 0 for v in shape):  # else "claims -640 bytes of data"
        raise GraphconvError(f"cannot read {what}: its .npy header is damaged (a shape of {tuple(shape)})",
                             file=str(path))
    return dtype, tuple(int(v) for v in shape), bool(fortran)


def _claimed_bytes(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    return math.prod(shape) * dtype.itemsize


def _loaded_bytes(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    """Peak bytes of loading: the data as stored, plus its float32 copy if it is not float32."""
    count = math.prod(shape)
    return count * dtype.itemsize + (0 if dtype == np.float32 else 4 * count)


def _check_claim(claimed: int, real: int, what: str, path: Path) -> None:
    """A header must describe exactly the bytes that follow it: more is a truncated file
    (or a lie meant to make us allocate), fewer is not what np.save writes."""
    if claimed > real:
        raise GraphconvError(f"cannot read {what}: its header claims {claimed} bytes of data but only "
                             f"{max(real, 0)} follow (a truncated or damaged file)", file=str(path))
    if claimed < real:
        raise GraphconvError(f"cannot read {what}: {real - claimed} bytes follow its data "
                             f"(its header claims {claimed})", file=str(path))


def _check_float_dtype(dtype: np.dtype, what: str, path: Path, hint: str = "") -> None:
    """Refuse all but float arrays; `hint` follows the refusal of integers (pixels saved as read)."""
    if dtype.hasobject:
        raise GraphconvError(f"cannot read {what}: it holds Python objects (pickled data is never loaded)",
                             file=str(path))
    if dtype.kind != "f":
        raise GraphconvError(f"{what} must be a float array, not {dtype}{hint if dtype.kind in 'ui' else ''}",
                             file=str(path))


def _finite_float32(array: np.ndarray, what: str, path: Path) -> np.ndarray:
    """`array` as float32, or an error naming the first NaN or inf and where it is."""
    with np.errstate(over="ignore"):
        converted = array.astype(np.float32, copy=False)
    flat = converted.ravel(order="K")
    for start in range(0, flat.size, FINITE_CHECK_CHUNK):
        block = flat[start:start + FINITE_CHECK_CHUNK]
        if not np.isfinite(block).all():
            offset = start + int(np.flatnonzero(~np.isfinite(block))[0])
            order = "F" if converted.flags.f_contiguous and not converted.flags.c_contiguous else "C"
            index = [int(i) for i in np.unravel_index(offset, converted.shape, order=order)]
            value = flat[offset]
            kind = "NaN" if np.isnan(value) else "inf"
            note = "" if array.dtype == np.float32 else f" (as float32; it was {array.dtype})"
            raise GraphconvError(f"{what} has {kind} values, the first at {index}{note}", file=str(path))
    return converted


def _reason(err: BaseException) -> str:
    """An exception's text, safe to put in a one-line message."""
    text = str(err)
    return repr(text[:160])[1:-1] if text else type(err).__name__


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in shape) if shape else "()"
