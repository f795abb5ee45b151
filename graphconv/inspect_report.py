"""The table `graphconv inspect` prints: layers, shapes, parameters, FLOPs, receptive fields."""
from __future__ import annotations

import math

from graphconv.cost import layer_costs
from graphconv.model import Model
from graphconv.receptive import (cells_off_the_lattice_note, first_cell_fields, partial_receptive_fields,
                                 whole_crop_layers)
from graphconv.text_table import text_table


def inspect_report(model: Model, input_hw: tuple[int, int] | None = None,
                   scales: list[int] | None = None, image_hw: tuple[int, int] | None = None) -> str:
    """The table at `input_hw`; `image_hw` the image's own size where a segmentation
    network runs it padded to `input_hw` (`Model.padded_hw`): its map is cut back to it;
    or where a classifier runs its top-left `input_hw` (`Model.trimmed_hw`)."""
    graph = model.graph
    c, hc, wc = model.crop_shape
    hw = input_hw or (hc, wc)
    costs = layer_costs(graph, hw)
    _, mixed = partial_receptive_fields(graph)
    fields = first_cell_fields(graph)
    whole = whole_crop_layers(graph)
    head = f"{graph.name}: input {c}x{hw[0]}x{hw[1]} (trained crop {c}x{hc}x{wc})"
    if model.seeded_weights:
        head += "; seeded weights (the spec names no weights file)"
    beyond_crop = _beyond_the_crop(graph, hw, whole, mixed)
    dilated = any(_dilation(graph, node.name) not in ("-", "1") for node in graph.layers())
    rows = [_layer_row(graph, row, fields, whole, beyond_crop, dilated) for row in costs]
    kinds = {row.name: fields.get(row.name, (None, 1))[1] for row in costs}
    total_params = sum(r.params for r in costs)
    total_flops = sum(r.flops for r in costs if r.name not in beyond_crop)
    rows.append(["total", "", "", f"{total_params:,}", f"{total_flops / 1e6:.1f}"])
    if beyond_crop:
        first = next(node for node in graph.layers() if node.name in beyond_crop)
        head += (f"\nfc layers take only the trained {hc}x{wc} crop: from '{first.name}' on, outputs and MFLOP "
                 f"at {hw[0]}x{hw[1]} are n/a (the total leaves them out); compile with fc-to-conv to slide the "
                 "network over larger images")
    columns = ["layer", "op", "output", "params", "MFLOP", "field", "stride", "offset",
               *(["dilation"] if dilated else [])]
    lines = [head, *text_table(columns, rows, left=2), COLUMNS_NOTE]
    if dilated:
        lines.append(DILATION_NOTE)
    if max(kinds.values(), default=1) > 1:
        lines.append(SEVERAL_KINDS_NOTE)
    if whole:
        lines.append(_whole_crop_note(graph, whole))
    if mixed is not None:
        lines.append(f"field '-': {mixed}")
    if model.stitch_copies > 1:
        lines.append(f"shift-and-stitch: {model.stitch_copies} shifted copies of each image in one pass "
                     "(counted in the FLOPs above; the outputs are one copy's)")
    if not graph.find("fc") and mixed is None and (input_hw or costs[-1].shape[1:] != (1, 1)):
        lines.append(_score_map_line(model, hw, image_hw))
        off_lattice = cells_off_the_lattice_note(graph)
        if off_lattice:
            lines.append(off_lattice)
    refined = graph.meta.get("compiled", {}).get("stride_method")
    if refined and not graph.find("fc") and mixed is None:
        lines.append(f"finer output strides: this model was made finer already ({refined}); inspect the original "
                     "model (its spec or ONNX file) for what each output stride costs from there")
    elif not graph.find("fc") and model.stitch_copies == 1 and mixed is None:
        lines.extend(stride_options(model, hw))
    if scales:
        lines.append(scales_report(model, input_hw or (max(hc, wc), max(hc, wc)), scales))
    return "\n".join(lines)


def _layer_row(graph, row, fields: dict, whole: set[str], beyond_crop: set[str], dilated: bool) -> list[str]:
    """A layer's cells of the table: its output and cost at the input size, and its
    first cell's field ("crop" where it sees the whole crop, '*' where its kinds of
    field differ, '-' past a merge of mixed strides)."""
    field, kinds = fields.get(row.name, (None, 1))
    if field is None:  # from a merge of mixed strides on: no field
        size, stride, offset = "-", "-", "-"
    else:
        size, offset = ("crop", "-") if row.name in whole else (_pair(field.size), _pair(field.offset))
        stride = _pair(field.stride)
        size += "*" if kinds > 1 and row.name not in whole else ""
    shape, flops = ("n/a", "n/a") if row.name in beyond_crop else ("x".join(map(str, row.shape)),
                                                                    f"{row.flops / 1e6:.1f}")
    return [row.name, row.op, shape, f"{row.params:,}", flops, size, stride, offset,
            *([_dilation(graph, row.name)] if dilated else [])]


def _score_map_line(model: Model, hw: tuple[int, int], image_hw: tuple[int, int] | None) -> str:
    """"score map: RxC cells at output stride S", of the image's own size where a
    segmentation network runs it padded (its map cut back), or a classifier its top-left
    part (`Model.trimmed_hw`)."""
    rows_stride, cols_stride = model.output_stride
    rows, cols = model.map_size(*hw)
    if image_hw is not None and hw[0] <= image_hw[0] and hw[1] <= image_hw[1] and tuple(image_hw) != tuple(hw):
        return (f"score map: {rows}x{cols} cells at output stride {rows_stride}x{cols_stride}, computed on the "
                f"image's top-left {hw[0]}x{hw[1]}: the network's branches meet on that size, and the pixels past "
                "it lie in no cell's crop")
    if image_hw is not None and tuple(image_hw) != tuple(hw):
        return (f"score map: {image_hw[0]}x{image_hw[1]} cells at output stride {rows_stride}x{cols_stride} "
                f"(of the {rows}x{cols} computed on the padded input, cut back to the image)")
    return f"score map: {rows}x{cols} cells at output stride {rows_stride}x{cols_stride}"


def _beyond_the_crop(graph, hw: tuple[int, int], whole: set[str], mixed) -> set[str]:
    """The layers whose output has no meaning at an input of `hw`: an fc and all after it,
    and a flatten that feeds fc layers only (its 960 features are no fc's 540 inputs),
    where `hw` is not the trained crop (an fc's weights take the crop's map only, so what
    it would see at another size is no layer of any network). None where the network
    cannot slide at all (`whole`, `mixed`): compile refuses those at other sizes too."""
    if tuple(hw) == tuple(graph.input_shape[1:]) or whole or mixed is not None:
        return set()
    flattens = [node for node in graph.find("flatten") if all(user.op == "fc" for user in node.users)]
    return {node.name for start in graph.find("fc") + flattens for node in [start, *graph.downstream(start)]}


def stride_options(model: Model, image_hw: tuple[int, int]) -> list[str]:
    """FLOPs of each finer output stride by both methods, so `--stride-method` is an
    informed choice. Finer than the stride compiling gives (`as_sliding`: a classifier
    that upsamples after a stride slides at its period, coarser than its map)."""
    from graphconv.receptive import total_stride
    from graphconv.strides import as_sliding, cheaper_method, dilate_problem, method_flops

    total = total_stride(as_sliding(model.graph))
    strides = [s for s in range(1, max(total)) if total[0] % s == 0 and total[1] % s == 0]
    if not strides:
        return []
    lines = [f"finer output strides for a {image_hw[0]}x{image_hw[1]} image (GFLOP):"]
    for stride in reversed(strides):
        flops = method_flops(model.graph, stride, image_hw)
        problem = dilate_problem(model.graph, stride) if math.isinf(flops["dilate"]) else None
        if problem is not None:
            shift = {"shift": flops["shift"]}
            lines.append(f"  --output-stride {stride}: dilate not possible ({problem}), shift "
                         f"{flops['shift'] / 1e9:.{_digits(shift)}f} (auto picks shift)")
            continue
        best = cheaper_method(model.graph, stride)  # what compile's auto picks (it weighs a smaller image)
        lines.append(f"  --output-stride {stride}: dilate {flops['dilate'] / 1e9:.{_digits(flops)}f}, shift "
                     f"{flops['shift'] / 1e9:.{_digits(flops)}f} (auto picks {best})")
    return lines


def _digits(flops: dict[str, float]) -> int:
    """Decimals enough to tell the two figures apart from 0 (a small network's are
    thousandths of a GFLOP)."""
    smallest = min(flops.values()) / 1e9
    return 2 if smallest >= 0.01 or smallest == 0 else min(6, 1 - math.floor(math.log10(smallest)))


def scales_report(model: Model, image_hw: tuple[int, int], scales: list[int]) -> str:
    """Score-map size and FLOPs per scale, so users can choose scales knowingly."""
    from graphconv.cost import total_flops
    from graphconv.scales import scaled_size

    _, hc, wc = model.crop_shape
    lines = [f"scales for a {image_hw[0]}x{image_hw[1]} image (shorter side resized to each):",
             f"{'scale':>7}{'image':>12}{'score map':>12}{'GFLOP':>10}"]
    total = 0.0
    for scale in scales:
        h, w = scaled_size(*image_hw, scale)
        if h < hc or w < wc:
            lines.append(f"{scale:>7}{f'{h}x{w}':>12}  smaller than the {hc}x{wc} crop")
            continue
        rows, cols = model.map_size(h, w)
        gflop = total_flops(model.graph, (h, w)) / 1e9
        total += gflop
        lines.append(f"{scale:>7}{f'{h}x{w}':>12}{f'{rows}x{cols}':>12}{gflop:>10.2f}")
    lines.append(f"{'total':>31}{total:>10.2f} GFLOP (x2 with --flip)")
    return "\n".join(lines)


def _whole_crop_note(graph, whole: set[str]) -> str:
    first = next(node for node in graph.layers() if node.name in whole)
    return (f"field 'crop': from layer '{first.name}' ({first.op}) on, values depend on statistics of a whole "
            "map (a group norm, or a gate pooled over the crop), so every cell sees the whole crop; such a "
            "network runs as the classifier, or on a larger image with `run --crops`")


COLUMNS_NOTE = ("  (field: the input pixels one cell of the layer's output sees; stride: input pixels between "
                "neighbouring cells; offset: the input row and column of the top-left pixel of cell (0,0)'s field, "
                "negative where it reaches into padding; two numbers are rows,cols; MFLOP: 2 per multiply-add, "
                "bias not counted)")


DILATION_NOTE = ("  (dilation: the spacing of a kernel's taps, in its input's cells; --output-stride's dilation "
                 "multiplies it, with the padding, where it cuts a stride above)")
SEVERAL_KINDS_NOTE = ("  *: the map's cells are of several kinds (made finer by an upsample after a stride, each "
                      "repeats or interpolates a cell of a coarser map): field and offset of cell (0,0); its "
                      "neighbours' fields are shifted by less than the stride, or differ in size")


def _dilation(graph, name: str) -> str:
    """A layer's dilation (what `--output-stride` dilate changes), "-" for a layer with none."""
    from graphconv.ops.registry import pair
    dilation = graph.node(name).params.get("dilation")
    return "-" if dilation is None else _pair(pair(dilation))


def _pair(values) -> str:
    return str(values[0]) if values[0] == values[1] else f"{values[0]},{values[1]}"
