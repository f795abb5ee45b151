"""The terminal tables of `inspect` and `--profile`: every cell in its column."""
import re

from graphconv.text_table import text_table


def _column_spans(line: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(r"\S+", line)]


def test_columns_grow_to_their_widest_cell():
    lines = text_table(["layer", "op", "MFLOP"], [["conv1", "conv", "29039997676800.0"], ["r", "relu", "0.2"]],
                       left=2)
    assert lines == ["layer  op               MFLOP",
                     "conv1  conv  29039997676800.0",
                     "r      relu               0.2"]


def test_a_short_row_leaves_its_last_cells_blank():
    lines = text_table(["a", "b", "c"], [["total", "12"]], left=1)
    assert lines == ["a       b  c", "total  12"]


def test_inspect_of_a_huge_input_keeps_numbers_in_their_columns():
    """A 1e8 x 1e8 input's shapes and MFLOP ran into the next column (fixed widths)."""
    import graphconv
    from graphconv.inspect_report import inspect_report
    from conftest import SPECS

    report = inspect_report(graphconv.load(SPECS / "alexnet.yaml"), (100_000_000, 100_000_000)).splitlines()
    header = next(line for line in report if line.startswith("layer "))
    conv1 = next(line for line in report if line.startswith("conv1 "))
    assert len(_column_spans(conv1)) == len(_column_spans(header)) == 8
    for (_, head_end), (_, cell_end) in list(zip(_column_spans(header), _column_spans(conv1)))[2:]:
        assert head_end == cell_end  # right-aligned under its heading
    assert "64x24999999x24999999" in conv1.split()
