"""The docs say what the code does: the Python in docs/writing-passes.md runs as written (a
page that teaches writing passes must not call a pass that exists nowhere, as section 6
ran 'insert-scale', or a function it never imports, get_op), the docs name every op a spec
can use (docs/spec-files.md) and every ONNX op the importer reads (docs/onnx.md), and every
relative link in README.md and docs/*.md leads to a file (and heading) that exists."""
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


def doc_page(name: str, title: str) -> str:
    """A page of docs/ (once a section of the README), checked to be the page titled so."""
    text = (ROOT / "docs" / name).read_text()
    assert text.startswith(f"# {title}\n"), text[:200]
    return text


def test_the_docs_list_every_op_a_spec_can_name():
    """docs/adding-an-op.md has a new op listed under "Spec files"; nothing checked it."""
    from graphconv.ops.registry import user_ops

    section = doc_page("spec-files.md", "Spec files")
    assert [name for name in user_ops() if f"`{name}`" not in section] == []


def test_the_worked_example_of_adding_an_op_is_sigmoid_s_own_opdef():
    """The page's OpDef is the file it says it is (comments and type hints aside): it
    lacked the op's later flags, which a reader copying it as a template would miss."""
    def opdef(text: str) -> str:
        call = text[text.index("register(OpDef("):]
        call = call[:call.index("\n))") + 4]
        return " ".join(re.sub(r"#.*", "", call).split())

    doc_page("adding-an-op.md", "Adding an op")
    block = next(code for _, code in python_blocks(ROOT / "docs" / "adding-an-op.md") if "register(OpDef(" in code)
    assert opdef(block) == opdef((ROOT / "graphconv" / "ops" / "sigmoid" / "__init__.py").read_text())


# Imported yet not named as such: ops on constants alone (shape arithmetic, said as that),
# graphconv's own export domain (read back), and one written with its sibling.
NOT_NAMED_IN_THE_DOCS = {"Ceil", "Constant", "ConstantOfShape", "Equal", "Floor", "Range", "ReduceProd",
                         "graphconv.ChannelConv", "graphconv.ChannelLayerNorm", "graphconv.LocalResponseNorm",
                         "GlobalMaxPool"}  # "GlobalAverage/MaxPool"


def test_the_docs_name_every_onnx_op_graphconv_imports():
    pytest.importorskip("onnx")
    from graphconv.frontends.onnx import converters

    section = doc_page("onnx.md", "Bring your own model (ONNX)")
    unnamed = {op for op in converters() if not re.search(rf"\b{op}\b", section)}
    assert unnamed == NOT_NAMED_IN_THE_DOCS


def test_the_readme_points_at_the_onnx_op_list():
    """The importer's refusal of an op sends the user to docs/onnx.md; a README reader must
    find the list too."""
    readme = (ROOT / "README.md").read_text()
    assert "The ONNX ops graphconv reads" in readme and "](docs/onnx.md)" in readme


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")  # `Literal[int](0)` is no link


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {anchor(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def test_every_relative_link_of_the_docs_leads_somewhere():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in LINK.findall(CODE.sub("", FENCE.sub("", page.read_text()))):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, fragment = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif fragment and (file.suffix != ".md" or fragment not in anchors(file)):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []
    assert len(pages) >= 12  # the README's sections moved to docs/: a glob that finds none checks nothing
