"""What error messages echo of a user's values: one short line, whatever the value."""
import os

import pytest

from graphconv.errors import MESSAGE_CHARS, GraphconvError, Location, printable, shown


@pytest.mark.parametrize("value,expected", [
    ("fc6", "'fc6'"),
    ("a\ngraphconv: fake line", "'a\\ngraphconv: fake line'"),
    (3.5, "3.5"),
    (10 ** 5000, "an integer of 16610 bits"),
    ({"a": [1, 2]}, "{'a': [1, 2]}"),
], ids=["name", "newline", "float", "huge-int", "mapping"])
def test_shown_values(value, expected):
    assert shown(value) == expected


def test_shown_cuts_big_shared_and_deep_values_without_expanding_them():
    shared = [1]
    for _ in range(60):
        shared = [shared, shared]  # 2^60 leaves if expanded
    deep = [1]
    for _ in range(5000):
        deep = [deep]
    for value in (shared, deep, ["x" * 10 ** 6] * 10 ** 6):
        text = shown(value)
        assert len(text) <= 90 and "\n" not in text


def test_an_error_is_one_bounded_line():
    err = GraphconvError("bad\nthing " * 1000, loc=Location("/tmp/net.yaml", 3), layer="a\nb")
    text = str(err)
    assert "\n" not in text and len(text) <= MESSAGE_CHARS + 3
    assert text.startswith("/tmp/net.yaml:3: layer 'a\\nb': bad")
    assert str(GraphconvError("x", file=".")) == ".: x"


def test_control_characters_print_as_escapes_file_names_included():
    """A downloaded folder's file name can hold a terminal's escape sequences (set the
    title, clear the screen): every message prints them as escapes, as it does newlines."""
    name = "batch/x\x1b]0;PWNED\x07\x1b[2Jy.png"
    text = str(GraphconvError("cannot read\r\nimage", file=name))
    assert text == "batch/x\\x1b]0;PWNED\\x07\\x1b[2Jy.png: cannot read\\r\\nimage"
    assert text.isprintable() and printable("caf\u00e9 \t") == "caf\u00e9 \\t"
    assert printable("\u5199\u771f\u3000001.yaml \U0001f469\u200d\U0001f52c") == "\u5199\u771f\u3000001.yaml \U0001f469\u200d\U0001f52c"
    assert printable("a\u202eb") == "a\\u202eb"  # a right-to-left override: a name read backwards


def test_a_file_is_named_as_given_or_relative_to_the_working_folder(tmp_path):
    """Two `model.yaml`s in two model folders are told apart: a message names the path as
    the user gave it, an absolute one inside the working folder relative to it."""
    (tmp_path / "a-fcn").mkdir()
    assert str(Location(str(tmp_path / "a-fcn" / "model.yaml"), 4)) == os.path.join("a-fcn", "model.yaml") + ":4"
    assert str(Location("b-fcn/model.yaml", 4)) == "b-fcn/model.yaml:4"
    assert str(Location("/elsewhere/model.yaml")) == "/elsewhere/model.yaml"
    assert str(GraphconvError("x", file=str(tmp_path / "m.npy"))) == "m.npy: x"


def test_nearest_offers_near_misses_then_a_name_differing_in_case():
    from graphconv.errors import nearest
    assert nearest("conv_1", ["conv1", "pool1", "fc6"]) == ["conv1"]
    assert nearest("FC", ["conv1", "fc"]) == ["fc"]  # too short for difflib; the same name but for case
    assert nearest("softmax", ["conv1", "fc"]) == []


def test_an_optional_package_missing_or_failing_to_import_is_one_error_saying_which(tmp_path, monkeypatch):
    """zarr installed with a numcodecs too new for it failed to import, and the message
    said "needs the zarr package: pip install ...", which pip answered "already installed"."""
    import sys

    from graphconv.errors import GraphconvError, import_optional

    (tmp_path / "broken_pkg_for_test.py").write_text("from numcodecs_gone_for_test import blosc\n")
    (tmp_path / "half_pkg_for_test.py").write_text("raise ImportError('cannot import name cbuffer_sizes')\n")
    (tmp_path / "abi_pkg_for_test.py").write_text("raise RuntimeError('module compiled against ABI 0x1000009')\n")
    (tmp_path / "ext_pkg_for_test").mkdir()  # installed, its compiled extension missing (a wrong-ABI wheel)
    (tmp_path / "ext_pkg_for_test" / "__init__.py").write_text("from . import _compiled_gone\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(GraphconvError, match=r"^install it$"):
        import_optional("absent_pkg_for_test", "install it")
    for module, why in (("broken_pkg_for_test", "No module named 'numcodecs_gone_for_test'"),
                        ("half_pkg_for_test", "cannot import name cbuffer_sizes"),
                        ("abi_pkg_for_test", "RuntimeError: module compiled against ABI"),
                        ("ext_pkg_for_test", "_compiled_gone")):
        with pytest.raises(GraphconvError, match=rf"^{module} is installed but failed to import: .*{why}"):
            import_optional(module, "install it")
        sys.modules.pop(module, None)
