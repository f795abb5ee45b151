"""Plain-text tables for the terminal (`inspect`, `--profile`): each column as wide as its
widest cell, so a 1e8 x 1e8 input's shapes and FLOPs stay in their columns."""
from __future__ import annotations

from typing import Sequence

GAP = 2  # spaces between columns


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int) -> list[str]:
    """The lines of a table: the first `left` columns aligned left (names), the rest right
    (numbers). A row may be shorter than the header (a total row leaves the last columns
    out); its missing cells are blank."""
    widths = [max(len(str(row[i])) for row in (header, *rows) if i < len(row)) for i in range(len(header))]
    lines = []
    for row in (header, *rows):
        cells = [str(row[i]) if i < len(row) else "" for i in range(len(widths))]
        padded = [cell.ljust(width) if i < left else cell.rjust(width)
                  for i, (cell, width) in enumerate(zip(cells, widths))]
        lines.append((" " * GAP).join(padded).rstrip())
    return lines
