"""Finer score maps: the arithmetic of output stride S below the network's total stride T.

Two ways, each giving the classifier on every crop S pixels apart for an unpadded network
(the same map, up to float rounding). A padded network's cells near the image's edges read
padding, and the two read it at different places: dilate pads the whole image once, at its
border, as the whole-image pass does; shift pads each shifted copy where the shift cuts it,
inside the image, so cells within the largest shift (T - S pixels) of the top and left
edges also read zeros where the image has pixels, and cells whose field passes the bottom
or right edge read a copy's zero fill as pixels (`shift_cut_padding`). Their two maps
differ there, each by about as much as it differs from the crop loop (`verify` measures it
per layer), and `auto` picks dilate for a network that pads wherever it can. One more
place they differ: dilate makes a ceil_mode pool floor mode (it adds no window at the crop
size, or dilate refuses it), so where an image's size gives the whole-image pass a last
window hanging off such a pool's map, the dilated map has none, and a later layer's
padding is read in its place (`dilated_ceil_note`): cells at the bottom and right edges,
whose crops read padding there in the crop loop too.

* shift (shift-and-stitch): run the converted net on f x f copies of the image shifted
  by k*S pixels (f = T/S, k = 0..f-1 on each axis) and interleave the maps. The layers do
  not change: a `shift_copies` layer after the input makes the copies (one batch, one
  pass) and an `interleave` layer before the output merges their maps, so receptive
  fields, FLOPs, memory plans and the runtime see ordinary layers.
* dilate (a trous): give each layer the cumulative stride gcd(c, S) instead of c. A layer
  whose input stride drops by r = c_in / gcd(c_in, S) keeps its place on the image grid by
  multiplying its dilation and padding by r; its own stride becomes gcd(c_out, S) /
  gcd(c_in, S). A `pad` layer there pads r times as many rows and columns on each side
  (its map is r times finer; `dilated_pad`). One pass then computes the whole fine grid and the early layers are not
  recomputed f*f times.

The `output-stride` pass applies this; `graphconv inspect` uses `method_flops` to show
what each choice costs. Both live here so library code never imports a pass.
"""
from __future__ import annotations

import math
from math import gcd

from graphconv.cost import total_flops
from graphconv.errors import GraphconvError, ShapeError, shown
from graphconv.ir import Graph
from graphconv.ops import pair
from graphconv.params import is_int
from graphconv.receptive import cells_off_the_lattice_note, receptive_fields, total_stride
from graphconv.shapes import infer_shapes

METHODS = ("auto", "dilate", "shift")  # how a finer output stride is made: `cheaper_method` picks for "auto"


def check_output_stride(stride: object, total: tuple[int, int], compiled_to: int | None = None) -> None:
    """Refuse a stride that does not divide `total`; `compiled_to`: the output stride a
    compiled model was made at already, which is then its total stride (it can only go
    finer, and saying so beats "choose one of 1" to someone who asked for a coarser one)."""
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1 or total[0] % stride \
            or total[1] % stride:
        divisors = [d for d in range(1, min(total) + 1) if total[0] % d == 0 and total[1] % d == 0]
        what = ("does not divide" if is_int(stride) and stride >= 1 else "is no whole number of pixels from 1 to")
        hint = ""
        if compiled_to is not None and is_int(stride) and stride > compiled_to:
            hint = (f" (this network was compiled to output stride {compiled_to} already, and a compiled "
                    "network's stride can only be made finer: compile the original classifier for a coarser one)")
        elif is_int(stride) and stride > max(total) and stride % total[0] == 0 and stride % total[1] == 0:
            k = stride // total[0], stride // total[1]
            hint = (f"; the map at stride {stride} is the network's own with rows and columns left out: "
                    f"map[..., ::{k[0]}, ::{k[1]}]")
        elif is_int(stride) and stride > max(total):
            hint = f"; cells at any other step: run --crops {stride} (the classifier on each crop)"
        raise GraphconvError(f"output stride {shown(stride)} {what} the network's total "
                             f"stride {total[0]}x{total[1]}; choose one of {', '.join(map(str, divisors))}{hint}")


def stitch_factor(graph: Graph, stride: int) -> tuple[int, int]:
    """How many shifted copies per axis reach output stride `stride` (checked)."""
    total = total_stride(graph)
    check_output_stride(stride, total, graph.meta.get("compiled", {}).get("output_stride"))
    return total[0] // stride, total[1] // stride


def dilate(graph: Graph, stride: int) -> dict[str, dict[str, dict]]:
    """Rewrite every windowed layer for cumulative strides gcd(c, stride) (see module doc);
    each changed layer's params before and after, by name (what `at_its_own_stride` undoes).

    Raises GraphconvError, naming the layer, for what has no dilated form: a layer whose
    window is its whole input (fc, globalavgpool, flatten: their own passes make them
    slide first), and a ceil-mode pool that the rewrite must change and whose ceil mode
    adds a window at the crop size. That window hangs off the crop's end; the
    finer-strided, dilated pool has no such window, so its map would come out shorter
    than the crop's (the IR check fails) and the cells at the image's right edge would
    be missing. A ceil-mode pool that adds no window at the crop is a floor-mode pool
    for every cell of the crop grid (a crop inside the image never reads a window
    hanging off it), so it is rewritten as one. A larger image can give the whole-image
    pass such a window at the map's end, which the dilated map then lacks
    (`dilated_ceil_note`)."""
    fields = receptive_fields(graph)
    crop = infer_shapes(graph, check_weights=False)  # the graph's as it was: annotations may be absent
    changed = {}
    for node in graph.layers():
        in_shapes = [crop[s.name] for s in node.inputs]
        window = node.opdef.window(node.params, in_shapes)
        if window is None:
            continue
        if window.floored:
            raise node.error(f"{node.op} makes its map finer, and a dilated network has no such layer (it "
                             "would upsample the interleaved maps together); use --stride-method shift")
        c_in = fields[node.inputs[0].name].stride
        c_out = fields[node.name].stride
        rate = [c_in[a] // gcd(c_in[a], stride) for a in (0, 1)]
        new_stride = tuple(gcd(c_out[a], stride) // gcd(c_in[a], stride) for a in (0, 1))
        if rate == [1, 1] and new_stride == tuple(window.stride):
            continue  # before the stride is cut: the layer stays as it is
        if node.op == "pad":
            if node.params["mode"] != "constant" and rate != [1, 1]:
                raise node.error(f"a {node.params['mode']} pad cannot be dilated (on the finer map it would "
                                 "mirror or repeat the interleaved maps' rows together, not each map's "
                                 "own); use --stride-method shift")
            changed[node.name] = _change(graph, node, padding=dilated_pad(node.params["padding"], rate))
            continue
        if node.op in ("shift_copies", "interleave"):
            raise node.error("this model's map was made finer by shift-and-stitch already (compiled "
                             "with --output-stride), which dilation cannot undo: compile the original model (its "
                             "spec or ONNX file) with the --output-stride wanted, or keep --stride-method shift")
        if not {"stride", "dilation", "padding"} <= set(node.params):
            raise node.error(f"{node.op} covers its whole input and cannot be dilated: compile with "
                             f"{sliding_pass(node) or 'a pass that makes it slide'} first")
        changes = {}
        if node.params.get("ceil_mode"):
            if _ceil_adds_window(node, in_shapes):
                raise node.error("a ceil_mode pool whose last window hangs off the crop cannot be dilated "
                                 "(the finer pool has no such window); use --stride-method shift")
            changes["ceil_mode"] = False
        changed[node.name] = _change(graph, node, **changes, stride=new_stride,
                                     dilation=tuple(pair(node.params["dilation"])[a] * rate[a] for a in (0, 1)),
                                     padding=tuple(pair(node.params["padding"])[a] * rate[a] for a in (0, 1)))
    try:  # a padded pool's padding, multiplied by the rate, can pass the half window pools allow
        infer_shapes(graph, check_weights=False)
    except ShapeError as err:
        raise GraphconvError(f"dilated, {err.message}; use --stride-method shift", loc=err.loc,
                             layer=err.layer) from None
    return changed


def _change(graph: Graph, node, **params) -> dict[str, dict]:
    """`graph.set_params(node, **params)`, and the params before and after, as lists (they
    are kept in the model's YAML)."""
    before = {key: _plain(node.params[key]) for key in params}
    graph.set_params(node, **params)
    return {"before": before, "after": {key: _plain(node.params[key]) for key in params}}


def merged_changes(earlier: dict, later: dict) -> dict:
    """Two `dilate` records of one graph as one (a pipeline may dilate twice): each
    layer's params before the first change, after the last."""
    merged = {name: {"before": dict(change["before"]), "after": dict(change["after"])}
              for name, change in earlier.items()}
    for name, change in later.items():
        entry = merged.setdefault(name, {"before": {}, "after": {}})
        entry["before"] = {**change["before"], **entry["before"]}
        entry["after"].update(change["after"])
    return merged


def _plain(value):
    return list(value) if isinstance(value, (tuple, list)) else value


def at_its_own_stride(graph: Graph) -> Graph:
    """`graph` with what output-stride did undone: its shift-and-stitch layers taken out,
    or its dilated layers given back the params `dilate` recorded. On one crop it gives
    the same cell in a fraction of the work ((T/S)^2 shifted copies, or a dilated map's
    extra positions, of which the crop loop keeps one). `graph` itself where there is
    nothing to undo, or where a later pass changed a dilated layer (no longer what was
    recorded): running it on each crop is exact too, only slower."""
    undilated = graph.meta.get("compiled", {}).get("undilated", {})
    stitched = graph.find("shift_copies") + graph.find("interleave")
    if not undilated and not stitched:
        return graph
    coarse = graph.copy()
    for node in stitched:
        coarse.remove(node.name)
    for name, change in undilated.items():
        params = coarse.node(name).params if name in coarse else {}
        if any(key not in params or _plain(params[key]) != value for key, value in change["after"].items()):
            return graph  # a later pass replaced or changed the layer (conv-to-fc, say)
    try:
        for name, change in undilated.items():
            coarse.set_params(name, **change["before"])
        infer_shapes(coarse, check_weights=False)
    except GraphconvError:
        return graph
    return coarse


def dilated_pad(padding: tuple[int, int, int, int], rate: list[int]) -> tuple[int, int, int, int]:
    """A pad layer's [top, left, bottom, right] where its map is `rate` times finer: each
    row of padding on the coarse grid is `rate` rows of the fine one (the fine map
    interleaves rate x rate coarse maps, each padded alike), as a dilated conv's padding
    is multiplied by its rate. Its window is 1x1 with stride 1, so nothing else changes."""
    top, left, bottom, right = padding
    return (top * rate[0], left * rate[1], bottom * rate[0], right * rate[1])


# What a network that cannot slide can do instead, for the errors that refuse it.
CROPS_INSTEAD = ("`graphconv run MODEL --image IMAGE --crops` computes the same map crop by crop (exact, "
                 "without the dense pass's shared work; from Python, graphconv.tiling.run_tiled(CropGrid(model, "
                 "stride), x, tile))")


def refuse_whole_map_layers(graph: Graph, instead: str = "") -> None:
    """Raise, naming the first, for a layer whose every value depends on statistics of its
    whole input map (`OpDef.whole_map`: groupnorm, global_l2norm, an align_corners
    upsample): on a larger image they are the whole image's, not each crop's, so no dense
    pass equals the classifier on every crop. `instead`: another way out, said last."""
    found = first_whole_map_layer(graph)
    if found:
        node, reason = found
        raise node.error(f"{node.op} {reason}: no single dense pass equals the classifier on every "
                         f"crop, and the network cannot be compiled to slide; {CROPS_INSTEAD}{instead}")


def first_whole_map_layer(graph: Graph):
    """(node, why) for the first layer whose values depend on statistics of its whole
    input map (`OpDef.whole_map_reason`), or None."""
    reasons = ((node, node.opdef.whole_map_reason(node.params)) for node in graph.layers())
    return next(((node, reason) for node, reason in reasons if reason), None)


# For a network taken for a classifier whose output on its crop is a map (`shapes.map_output_note`).
PREDICTS_A_MAP = ("; if the network predicts a map itself (a U-Net, an FCN), import it with --task segmentation "
                  "(`task: segmentation` in a spec): it then runs on the whole image, as PyTorch runs it")


def sliding_pass(node) -> str | None:
    """The pass that makes `node` slide over larger images, where it sees its whole input
    (`OpDef.sees_whole_input`: fc-to-conv for an fc), else None."""
    return node.opdef.sees_whole_input[0] if node.opdef.sees_whole_input else None


def _ceil_adds_window(node, in_shapes) -> bool:
    """Whether a ceil-mode pool has more windows at the crop size than in floor mode."""
    floor_params = {**node.params, "ceil_mode": False}
    try:
        floor = node.opdef.shape(floor_params, in_shapes)
    except ShapeError:
        return True  # only ceil mode fits a window in at all
    return floor != node.opdef.shape(node.params, in_shapes)


def cheaper_method(graph: Graph, stride: int) -> str:
    """Pick the method with fewer FLOPs on an image a few strides larger than the crop
    (shift when the network cannot be dilated), but dilate whenever a layer pads at the
    top or left (`padded_at_the_start`) and it can be dilated: shift pads each copy where
    its shift cuts it, inside the image (`shift_cut_padding`), and a cost estimate should
    not decide which cells read zeros in place of pixels."""
    flops = method_flops(graph, stride)
    if math.isfinite(flops["dilate"]) and padded_at_the_start(graph):
        return "dilate"
    return "dilate" if flops["dilate"] <= flops["shift"] else "shift"


def padded_at_the_start(graph: Graph) -> list[str]:
    """The layers whose windows start before their input's first row or column (a conv's
    or pool's padding, a pad layer's top or left), by reflection or any value: those a
    shifted copy's top and left cut feeds."""
    shapes = infer_shapes(graph, check_weights=False)
    padded = []
    for node in graph.layers():
        window = node.opdef.window(node.params, [shapes[s.name] for s in node.inputs])
        if window is not None and any(window.padding):
            padded.append(node.name)
    return padded


def shift_cut_padding(graph: Graph, dilate_problem_then: str | None = None) -> str | None:
    """What a shift-and-stitch network (its `shift_copies` layer) whose layers pad at the
    start, or whose ceil_mode pools hang a window off the map's end, reads in place of
    pixels, said once at compile; None for any other network. Copy (a, b) is the image
    shifted up by a and left by b steps, so its layers pad where that shift cuts it, rows
    and columns inside the image: cells whose field starts within the largest shift of
    the image's top or left edge read zeros (or a reflection) there, where the dilated
    network, like the whole image's pass, reads the pixels. And a copy keeps the image's
    size, filled with zeros past its end: a cell whose field reaches past the bottom or
    right edge reads those as pixels (their conv's bias and activation applied) where
    dilate reads each layer's padding, and a hanging ceil_mode window nothing at all.
    Cells whose field lies in the image further in agree. `dilate_problem_then`: why
    dilate could not make the network finer (`dilate_problem`), where it could not."""
    copies = graph.find("shift_copies")
    if not copies:
        return None
    padded = padded_at_the_start(graph)
    hanging = [node.name for node in graph.layers() if node.params.get("ceil_mode") and node.name not in padded]
    if not padded and not hanging:
        return None
    (fy, fx), (sy, sx) = pair(copies[0].params["factor"]), pair(copies[0].params["step"])
    reach = (fy - 1) * sy, (fx - 1) * sx
    near = " or ".join(f"{n} {what}{'' if n == 1 else 's'} of the image's {edge}"
                       for n, what, edge in ((reach[0], "row", "top"), (reach[1], "column", "left edge")) if n)
    start = (f"each shifted copy is also padded where its shift cuts it, inside the image, so a cell whose field "
             f"starts within {near} may read that padding in place of pixels, and " if padded else "")
    instead = " or ".join((["the layers' own padding"] if padded else [])
                          + (["the nothing a hanging ceil_mode window reads there"] if hanging else []))
    what = " and ".join(([f"pads ({_first_names(padded)})"] if padded else [])
                        + ([f"has ceil_mode pools ({_first_names(hanging)}), whose last window may hang off the map"]
                           if hanging else []))
    return (f"shift-and-stitch on a network that {what}: {start}a cell whose field reaches past the image's bottom "
            "or right edge reads the zeros a copy is filled with there as pixels (run through the layers before it, "
            f"not {instead}); "
            + (f"dilate, which pads only at the image's border, cannot make this network finer ({dilate_problem_then})"
               if dilate_problem_then else "--stride-method dilate (what auto picks for such a network where it "
                                           "can) pads only at the image's border"))


def dilated_ceil_note(compiled: Graph) -> str | None:
    """What a dilated network's ceil_mode pools, made floor mode, leave out, said once at
    compile; None where no such pool has a padded layer after it. On an image whose size
    leaves a pool's last window hanging off its map, the whole-image pass at the
    network's own stride computes that window and the padded layers after it read it;
    the dilated map has none (one fine grid has no per-shift last window), so they read
    their padding there: the map's bottom and right edge cells differ from the
    whole-image pass. The crop loop reads padding at those places as well (a crop's own
    pass has no hanging window), so no cell that the crop loop gets exactly changes."""
    undilated = compiled.meta.get("compiled", {}).get("undilated", {})
    floored = [name for name, change in undilated.items()
               if change["before"].get("ceil_mode") and change["after"].get("ceil_mode") is False]
    padded = set(padded_at_the_start(compiled))
    later = list(dict.fromkeys(node.name for name in floored if name in compiled
                               for node in compiled.downstream(name) if node.name in padded))
    if not later:
        return None
    return (f"dilated, the ceil_mode pools ({_first_names(floored)}) compute no window hanging off the map's end "
            "(a crop gives them none), where the whole-image pass at the network's own stride computes one if "
            f"the image's size leaves it: there the padding of later layers ({_first_names(later)}) "
            "is read in its place, so cells at the map's bottom and right edges differ from that pass (the crop "
            "loop reads padding there too); --stride-method shift computes the window in its copy at phase 0")


def _first_names(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def method_flops(graph: Graph, stride: int, image_hw: tuple[int, int] | None = None) -> dict[str, float]:
    """FLOPs per image of both methods for an image of `image_hw` (default: crop + 4 strides).
    A network `dilate` refuses (a ceil-mode pool hanging off the crop, say) costs
    infinitely many by that method, so a comparison never picks it and a report still has
    the shift figure to show."""
    sliding = as_sliding(graph)
    fy, fx = stitch_factor(sliding, stride)
    total = total_stride(sliding)
    if image_hw is None:
        image_hw = (graph.input_shape[1] + 4 * total[0], graph.input_shape[2] + 4 * total[1])
    dilated = sliding.copy()
    try:
        dilate(dilated, stride)
        dilated_flops = total_flops(dilated, image_hw)
    except GraphconvError:
        dilated_flops = math.inf
    return {"shift": fy * fx * total_flops(sliding, image_hw), "dilate": dilated_flops}


def dilate_problem(graph: Graph, stride: int) -> str | None:
    """Why `dilate` cannot make `graph` reach output stride `stride` ("layer 'p': a reflect
    pad cannot be dilated ..."), worked out on the graph as compile would dilate it
    (`as_sliding`); None when it can. What `inspect` prints instead of an infinite cost."""
    dilated = as_sliding(graph).copy()
    try:
        dilate(dilated, stride)
    except GraphconvError as err:
        reason = err.message.split("; use --stride-method shift")[0]
        return f"layer '{err.layer}': {reason}" if err.layer else reason
    return None


def as_sliding(graph: Graph) -> Graph:
    """`graph` as output-stride sees it in a compile: a layer that covers its whole input
    (globalavgpool, flatten, fc) made to slide by its pass (`sliding_pass`) first, and a
    classifier's map made finer than it slides cut to its crops (keep-crop-cells). Dilating
    a network that still had its global pool refused it, and `inspect` said dilation
    costs infinitely many FLOPs where compile dilates it."""
    if not any(sliding_pass(node) for node in graph.layers()) and not _slides_coarser_than_its_map(graph):
        return graph
    from graphconv.pass_manager import CONVERTING_PASSES, PassManager

    try:
        return PassManager(list(CONVERTING_PASSES)).run(graph)
    except GraphconvError:
        return graph  # what cannot slide is refused, with its reason, by dilate itself


def _slides_coarser_than_its_map(graph: Graph) -> bool:
    """A classifier whose cells are not all crops (`crop_cell_step`), which keep-crop-cells
    cuts; False for a network with no field (its error is dilate's or shift's to give)."""
    try:
        return cells_off_the_lattice_note(graph) is not None
    except GraphconvError:
        return False


def insert_stitch(graph: Graph, factor: tuple[int, int], step: int) -> None:
    """Shift-and-stitch as two layers: `shift_copies` right after the input and
    `interleave` right before the output (see the module docstring)."""
    from graphconv.ops import get_op
    from graphconv.params import normalize_params

    copies = normalize_params(get_op("shift_copies"), {"factor": list(factor), "step": step})
    graph.insert_after(graph.input, graph.fresh_name("shift_copies"), "shift_copies", copies)
    merge = normalize_params(get_op("interleave"), {"factor": list(factor)})
    graph.insert_after(graph.output, graph.fresh_name("interleave"), "interleave", merge)


def stitch_copies(graph: Graph) -> int:
    """How many shifted copies of each image the network runs (1 without shift-and-stitch)."""
    copies = 1
    for node in graph.find("shift_copies"):
        copies *= node.params["factor"][0] * node.params["factor"][1]
    return copies
