"""The docs say what the code does: the Python in docs/writing-passes.md runs as written (a
page that teaches writing passes must not call a pass that exists nowhere, as section 6
ran 'insert-scale', or a function it never imports, get_op), and the README names every
op a spec can use and every ONNX op the importer reads."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
CREATE = re.compile(r"Create `([\w.]+)`:\s*$")


def python_blocks(page: Path) -> list[tuple[str | None, str]]:
    """(file name, code) of each python block: a block introduced by "Create `x.py`:" is
    that file's content, the others are run, in order, as one script."""
    text = page.read_text()
    blocks = []
    for match in BLOCK.finditer(text):
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        named = CREATE.search(before)
        blocks.append((named.group(1) if named else None, match.group(1)))
    return blocks


def test_every_python_block_of_writing_passes_runs(tmp_path):
    blocks = python_blocks(ROOT / "docs" / "writing-passes.md")
    assert any(name == "my_passes.py" for name, _ in blocks) and len(blocks) >= 5
    for name, code in blocks:
        if name:
            (tmp_path / name).write_text(code)
    script = "\n\n".join(code for name, code in blocks if not name)
    (tmp_path / "specs").symlink_to(ROOT / "specs")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}")
    return text[start:text.index("\n## ", start + 1)]


def test_the_readme_lists_every_op_a_spec_can_name():
    """docs/adding-an-op.md has a new op listed under "Spec files"; nothing checked it."""
    from graphconv.ops.registry import user_ops

    section = readme_section("Spec files")
    assert [name for name in user_ops() if f"`{name}`" not in section] == []


# Imported yet not named as such: ops on constants alone (shape arithmetic, said as that),
# graphconv's own export domain (read back), and one written with its sibling.
NOT_NAMED_IN_THE_README = {"Ceil", "Constant", "ConstantOfShape", "Equal", "Floor", "Range", "ReduceProd",
                           "graphconv.ChannelConv", "graphconv.ChannelLayerNorm", "graphconv.LocalResponseNorm",
                           "GlobalMaxPool"}  # "GlobalAverage/MaxPool"


def test_the_readme_names_every_onnx_op_graphconv_imports():
    pytest.importorskip("onnx")
    from graphconv.frontends.onnx import CONVERTERS

    section = readme_section("Bring your own model (ONNX)")
    unnamed = {op for op in CONVERTERS if not re.search(rf"\b{op}\b", section)}
    assert unnamed == NOT_NAMED_IN_THE_README
