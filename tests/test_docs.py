"""The Python in docs/writing-passes.md runs as written: a page that teaches writing passes
must not call a pass that exists nowhere (section 6 ran 'insert-scale') or a function it
never imports (get_op)."""
import re
import subprocess
import sys
from pathlib import Path

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
