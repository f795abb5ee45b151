"""`graphconv run --image BIG --tile N ...` and `graphconv run --images GLOB ...`: the CLI
side of tiled evaluation (graphconv.tiling) and of Dask runs (graphconv.cluster).

A run is tiled when asked (--tile, --workers, --reduce argmax, --classes, a .zarr
output), when the image is read lazily (TIFF, zarr), or when the whole-image pass would
not fit the memory budget (then with a one-line note saying so). Progress goes to
stderr as a tqdm bar when stderr is a terminal (tqdm is in the `scale` extra), as a
plain line every minute when it is a file (a batch job's log), never with --quiet.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import io
import math
import os
import re
import shlex
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from graphconv.classes import class_scores, print_top, ranked_text, top_basis
from graphconv.cli import (check_heatmap_class, check_heatmap_has_a_map, draw_heatmap, heatmap_settings, heatmap_tag,
                           nodata_flag, note, note_cold_kernels, note_dense_padding, note_how_the_image_is_read,
                           note_how_the_raster_is_read, note_pixels_as_they_are, note_run_as_written,
                           note_shallow_pixels, note_value_scaling, resolve_class_names, ways_to_map)
from graphconv.errors import GraphconvError, Location, agreeing, counted, printable, shown, user_message
from graphconv.georef import is_zarr_path
from graphconv.images import SMALLER_THAN_A_CROP_HINT
from graphconv.memory import FLOAT_BYTES, check_fits, format_size, memory_limit

if TYPE_CHECKING:
    from graphconv.georef import CellPlacement
    from graphconv.manifest import Manifest
    from graphconv.tiling import DamagedCells, MapFile, PartialMap, TilePlan


def grid_for(args: argparse.Namespace, model):
    """What the run maps: the model's dense pass, or with --crops the classifier on every crop."""
    from graphconv.tiling import CropGrid, DenseGrid

    _check_pad_image(args, model)
    if args.crops is None:
        return DenseGrid(model)
    if model.segmentation:
        raise GraphconvError("--crops runs a classifier on every crop; a segmentation network's map is its "
                             "dense pass (drop --crops)")
    stride = (args.crops, args.crops) if args.crops else model.output_stride
    if any(int(s) != s for s in stride):
        raise GraphconvError(f"--crops: the network's stride is {stride[0]}x{stride[1]} pixels, not whole; "
                             "give one: --crops STRIDE")
    return CropGrid(model, tuple(int(s) for s in stride))


def _check_pad_image(args: argparse.Namespace, model) -> None:
    """--pad-image gives a classifier's map a cell on every stride x stride block of the
    image; a segmentation network's map covers its image already, and a classifier run as
    written (one vector per image) has no cells to give."""
    if getattr(args, "pad_image", None) is None:
        return
    if model.segmentation:
        raise GraphconvError("--pad-image pads an image for a classifier's map to reach its edges; a segmentation "
                             "network's map covers the image already (drop --pad-image)")
    if model.returns_vectors and args.crops is None:
        raise GraphconvError(f"--pad-image pads an image for a map; {model.graph.name} as written gives one class "
                             "vector per image: compile it, or add --crops")


def tiling_reason(args: argparse.Namespace, model, grid) -> str | None:
    """Why an --image run goes in tiles, in the words a refusal of a whole-image option
    gives it (an option given, the image's or the map's file kind, its size), or None for
    a run on the whole image at once."""
    given = [flag for flag, on in (("--tile", args.tile), ("--workers", args.workers), ("--scheduler", args.scheduler),
                                   ("--reduce argmax", args.reduce == "argmax"), ("--classes", args.classes),
                                   ("--downsample", args.downsample > 1), ("--mpp", args.mpp is not None),
                                   ("--resume", getattr(args, "resume", False)),
                                   ("--skip-background", args.skip_background is not None), ("--mask", args.mask))
             if on]
    if given:
        return f"{given[0]} runs it in tiles"
    if is_zarr_path(args.output):
        return "a .zarr map is written tile by tile"
    from graphconv.sources import is_tiff
    if is_tiff(args.image):
        return "a TIFF is read a tile at a time"
    if Path(args.image).suffix.lower() == ".zarr" or Path(args.image).is_dir():
        return "a zarr array is read a tile at a time"
    if args.resize or getattr(args, "full_map", False):
        return None  # a whole-image run (refused by the memory check when over the budget)
    size = _image_size(args.image)
    if size is None or size[0] < model.crop_shape[1] or size[1] < model.crop_shape[2]:
        return None  # the whole-image path reports what is wrong with the file or its size
    from graphconv.tiling import tile_bytes
    need, budget = tile_bytes(grid, size), _tile_budget(args, grid, size)
    if need <= budget:
        return None
    return f"the whole image would need {format_size(need)}, over the {format_size(budget)} budget"


def _image_size(path: str) -> tuple[int, int] | None:
    """(H, W) upright from the file's header (`images.image_size`); None when it cannot
    be read (the whole-image path then reports why)."""
    from graphconv.images import image_size

    try:
        return image_size(path)
    except Exception:  # whatever is wrong with the file, the whole-image path reports it
        return None


def run_tiled_command(args: argparse.Namespace, model, grid, reason: str) -> int:
    """An --image run in exact tiles, for `reason` (`tiling_reason`): every check first (a
    refused run writes nothing), then what the run will do said, the tiles computed into
    the map (its file, or memory), and what was done said."""
    from graphconv.tiling import DamagedCells

    _refuse_what_a_tiled_run_cannot_do(args, model, reason)
    run = _checked_tiled_run(args, model, grid, _opened_image(args, model, grid))
    work = _tile_work_said(run)
    if not (args.workers or args.scheduler):
        note_cold_kernels(model, args.device)
    written_over = _partial_map_beside(args.output, run.job) if args.output and not run.resume else None
    start = time.perf_counter()
    damaged = DamagedCells() if getattr(args, "skip_damaged", False) else None
    if args.output:
        done = _tiles_computed_into_the_map_file(run, work, damaged, written_over)
        if done is None:
            return _kept_as_another_run_finished_it(args.output)
    else:
        done = _tiles_computed_in_memory(run, work, damaged)
    _print_what_was_done(run, work, done, time.perf_counter() - start, damaged)
    from graphconv.sources import unmarked_zeros_note
    if said := unmarked_zeros_note(run.source):
        note(f"note: {said}")
    return 0


def _refuse_what_a_tiled_run_cannot_do(args: argparse.Namespace, model, reason: str) -> None:
    """Refuse, before the image is even opened, the options only a whole-image run takes
    (--scales, --profile, --full-map), saying why this one goes in tiles, and a wrong
    --classes (before the image's notes, which would bury the error)."""
    from graphconv.tiling import model_map_transform

    if args.scales:
        from graphconv.cluster import SCALES_NOT_IN_TILES
        raise GraphconvError(SCALES_NOT_IN_TILES, file=args.image)
    if args.profile or args.full_map:
        flag = "--profile" if args.profile else "--full-map"
        raise GraphconvError(f"{flag} takes a whole-image run, and this one goes in tiles: {reason}")
    model_map_transform(model, args.reduce, args.classes)  # a wrong --classes refused before the image: line


@dataclass(frozen=True)
class _TiledRun:
    """An --image run in tiles as `_checked_tiled_run` settled it, every check passed:
    the image opened (`source`), its tiles, the map as written (each cell's `transform`
    of the scores, the map's `shape` and `dtype`), and where a partial map may be kept
    (--output, --resume) the `job` it records; `same_job` where --resume found this
    very job's partial map (whose run, if running, is waited for)."""
    args: argparse.Namespace
    model: Any
    grid: Any
    source: Any
    tiles: _PlannedTiles
    transform: Any
    shape: tuple[int, ...]
    dtype: Any
    resume: bool
    job: dict | None
    same_job: bool


def _checked_tiled_run(args: argparse.Namespace, model, grid, source) -> _TiledRun:
    """The tiles planned and the map they make settled, with every refusal that needs
    them (a --heatmap the map cannot draw, an output not this run's to replace, another
    job's partial map, a map too large for memory) made before any tile is computed."""
    from graphconv.background import NO_CALL_CLASS, NO_CLASS
    from graphconv.images import output_activation
    from graphconv.tiling import model_map_transform

    planned = _plan_the_tiles(args, model, grid, (source.height, source.width), source)
    resume = getattr(args, "resume", False)
    classes = model.output_channels
    transform, channels, dtype = model_map_transform(model, args.reduce, args.classes)
    kept = len(args.classes) if args.classes else classes
    if args.reduce == "argmax" and output_activation(model.graph) == "sigmoid":
        several = ("; a cell calling several classes keeps its best alone: write the scores (drop --reduce) for "
                   "every class it calls, which graphconv cells lists") if kept > 1 else ""
        print(f"note: {model.graph.name} ends in a sigmoid, each class called on its own: --reduce argmax writes "
              f"each cell's best class where its probability is at least 0.5, and {NO_CALL_CLASS} where no class is "
              f"({NO_CLASS}: not computed){several}", file=sys.stderr)
    elif args.reduce == "argmax" and kept == 1:
        print("note: --reduce argmax over one score channel gives its class in every cell: a one-channel output (a "
              "logit) wants its scores written (drop --reduce) and thresholded", file=sys.stderr)
    _check_heatmap(args, classes, model.graph.meta.get("labels"))
    _check_heatmap_bands(args, source)
    shape = (1, channels, *planned.plan.map_hw)
    if args.output:
        from graphconv.cluster import check_replaceable
        check_replaceable(args.output, dtype, shape)
    job = _job(args, model, grid, source, planned.plan, shape, dtype) if resume or args.output else None
    same_job = _check_the_partial_map_to_resume(args, job, shape, dtype) if resume else False
    _refuse_a_map_too_large_for_memory(args, shape, dtype)
    return _TiledRun(args, model, grid, source, planned, transform, shape, dtype, resume, job, same_job)


def _check_the_partial_map_to_resume(args: argparse.Namespace, job: dict, shape: tuple[int, ...], dtype) -> bool:
    """--resume: whether a partial map of this very job is there to go on from (its run,
    if running, is then waited for); another job's, or one damaged since, refused before
    any work. Where none is there but the map is (a finished run's job script rerun),
    say why the run computes it all again."""
    from graphconv.tiling import PartialMap

    partial = PartialMap(args.output)
    if partial.exists() and not partial.of_the_image_before_it_changed(job):  # that one is removed (MapFile)
        partial.check(job)  # another run's partial map: refused before any work (and again when opened)
        partial.check_intact(shape, dtype)  # and one damaged since (an .npy cut short)
        return True
    if os.path.lexists(args.output):  # a finished run's command again (a job script rerun): say why it works
        note(f"note: {args.output} is there and no stopped run's {partial.shown} is: --resume has nothing to go "
             "on from, so the whole map is computed again and replaces it")
    return False


def _refuse_a_map_too_large_for_memory(args: argparse.Namespace, shape: tuple[int, ...], dtype) -> None:
    """Without --output the map is held in memory for --top and --heatmap: refused, before
    any tile, where it would take more than a quarter of the budget."""
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if not args.output and nbytes > memory_limit() // 4:
        raise GraphconvError(f"the score map is {format_size(nbytes)}: give --output MAP.npy or MAP.zarr "
                             "(written tile by tile), or make it smaller with --reduce argmax or --classes")


@dataclass(frozen=True)
class _TileWork:
    """What a checked run's tiles are to do (`_tile_work_said`): the map's placement on
    the image, with what it records (the image's `stamp` among it), and the cells left
    out with the tiles of such cells alone, which are not computed (`_skipper`)."""
    placement: CellPlacement
    stamp: list[int] | None
    blank_cells: Any
    blank_tiles: frozenset


def _tile_work_said(run: _TiledRun) -> _TileWork:
    """Say, before the work, how the image goes in tiles, where the map's cells lie and
    which cells are left out, so a user can stop a long run that is not what they meant;
    and settle what the map records of them."""
    _say_the_tiles(run)
    placement, stamp = _recorded_placement(run)
    blank_cells, blank_tiles = _skipper(run.args, run.tiles.background, run.tiles.plan)
    return _TileWork(placement, stamp, blank_cells, blank_tiles)


def _say_the_tiles(run: _TiledRun) -> None:
    """The tiles as planned: a --tile that wastes work (with a better one), what --crops
    maps, and the plan's line."""
    from graphconv.tiling import CropGrid

    args, grid, tiles = run.args, run.grid, run.tiles
    image_hw = (run.source.height, run.source.width)
    if args.tile is not None:
        _note_a_wasteful_tile(grid, image_hw, tiles.plan, tiles.budget, tiles.background)
    if isinstance(grid, CropGrid):
        background = tiles.background
        left_out = sum(background.blank_count(tile) for tile in tiles.plan.tiles) if background is not None else 0
        print(grid.describe(image_hw, left_out=left_out), flush=True)  # flushed: not after a Ctrl-C's line
    print(f"tiles: {tiles.plan.describe()}{_tile_cut_to_whole_cells(args.tile, tiles.plan, image_hw)}",
          file=sys.stderr)


def _tile_cut_to_whole_cells(tile: int | None, plan, image_hw: tuple[int, int]) -> str:
    """Why the tiles are smaller than --tile asked, where they are: a box holds whole
    cells, so `--tile 500` of a network 32 pixels a cell read boxes of 481 and the user
    asked where 19 pixels had gone."""
    if tile is None:
        return ""
    cut = [plan.tile_hw[a] < min(tile, image_hw[a]) for a in (0, 1)]
    if not any(cut):
        return ""
    largest = f"{plan.tile_hw[0]}x{plan.tile_hw[1]}"
    return f" (--tile {tile}: a tile reads the boxes of whole cells, {largest} the largest within it)"


def _recorded_placement(run: _TiledRun) -> tuple[CellPlacement, list[int] | None]:
    """Where the map's cells lie on the image (said), with what the map records beside it:
    the image, model and settings that made it (the model options given too: --weights,
    --crop-size, --task, --activation), its no-data, the image's stamp (checked
    before the map goes into place: `cluster.image_unchanged`) and the tile plan (which
    --resume goes on with); and that stamp."""
    from graphconv.cluster import IMAGE_STAMP, image_stamp, left_out_record, loaded_with
    from graphconv.georef import cell_placement, map_contents
    from graphconv.tiling import recorded_plan

    args, background = run.args, run.tiles.background
    placement = cell_placement(run.source, run.grid.cell_area)
    print(f"cells: {placement.describe()}", file=sys.stderr)
    left_out = left_out_record(_map_options(args, run.grid), args.image)
    contents = {**map_contents(args.image, args.model, run.model, args.classes, args.reduce, left_out),
                **(background.nodata_record() if background is not None else {}), **loaded_with(_model_ref(args))}
    stamp = image_stamp(args.image)
    recorded = {**contents, IMAGE_STAMP: stamp, "tile_plan": recorded_plan(run.tiles.plan, run.tiles.tile)}
    return replace(placement, contents=recorded), stamp


@dataclass(frozen=True)
class _TilesComputed:
    """What a run's tiles made: the map (`out`: its open file, or the array in memory),
    how many tiles were computed, and --top's scores (None without --top)."""
    out: Any
    computed: int
    means: np.ndarray | None


def _tiles_computed_into_the_map_file(run: _TiledRun, work: _TileWork, damaged: DamagedCells | None,
                                      written_over: PartialMap | None) -> _TilesComputed | None:
    """--output: the tiles written into the map's file as they are done (with --resume,
    those an earlier run did skipped), its --heatmap drawn before the map is renamed into
    place, and a partial map of this job it replaced removed; None where another run
    resuming the same partial map finished it while this one waited."""
    from graphconv.files import FinishedByAnotherRun

    args, tiles = run.args, run.tiles
    map_file = _map_file(run, work)
    with contextlib.ExitStack() as stack:
        try:
            out = stack.enter_context(map_file)
        except FinishedByAnotherRun:
            return None
        args.partial_map_open = run.resume  # a failure from here on keeps its tiles done (`cli._partial_map_kept`)
        if run.resume:
            _say_stale_tiles_removed(map_file.partial, args.image)
            _say_resumed(map_file, tiles.plan, work.blank_tiles, _left_out_over(tiles.background))
        todo = [t for t in tiles.plan.tiles if t not in map_file.done and t not in work.blank_tiles]
        with _progress(args, len(todo), "tiles", sum(t.pixels for t in todo)) as bar:
            def on_tile(t):
                map_file.record(t)  # --resume: listed as done once its block is on disk
                _advance_if_computed(bar.advance, t, work.blank_tiles)
            with _out_of_memory_in_a_tile(args, run.grid, tiles.computed_plan, tiles.budget):
                _compute(args, run.grid, run.source, tiles.plan, tiles.tile, out, run.transform, on_tile,
                         work.blank_cells, map_file.done, damaged, tiles.piece_cells)
        _draw_heatmap(args, run.model, run.source, run.grid, out, tiles.background)  # before the map is renamed
        means = _top_scores(args, out)
    if not run.resume and written_over is not None:
        _remove_a_partial_map_written_over(written_over)
    return _TilesComputed(out, len(todo), means)


def _map_file(run: _TiledRun, work: _TileWork) -> MapFile:
    """The map's file (`tiling.MapFile`), written tile by tile and renamed into place when
    complete: georeferenced as the image (said), and with --resume a partial map kept
    if the run stops, which the same command goes on from."""
    from graphconv.cluster import image_unchanged, waiting_note
    from graphconv.tiling import MapFile

    args, plan = run.args, run.tiles.plan
    return MapFile(args.output, run.shape, run.dtype, chunk_hw=plan.cells_hw,
                   georeference=_map_georeference(args, run.source, run.grid), placement=work.placement,
                   resume=run.job if run.resume else None, tiles=plan.tiles, blank=work.blank_tiles,
                   unchanged=image_unchanged(args.image, work.stamp),
                   waiting=(lambda: waiting_note(args.image)) if run.same_job else None)


def _tiles_computed_in_memory(run: _TiledRun, work: _TileWork, damaged: DamagedCells | None) -> _TilesComputed:
    """No --output: the map held in memory (`_refuse_a_map_too_large_for_memory` saw it
    fits) for --top and --heatmap."""
    args, tiles = run.args, run.tiles
    todo = [t for t in tiles.plan.tiles if t not in work.blank_tiles]
    with _progress(args, len(todo), "tiles", sum(t.pixels for t in todo)) as bar:
        out = np.empty(run.shape, run.dtype)
        with _out_of_memory_in_a_tile(args, run.grid, tiles.plan, tiles.budget):
            _compute(args, run.grid, run.source, tiles.plan, tiles.tile, out, run.transform,
                     lambda t: _advance_if_computed(bar.advance, t, work.blank_tiles), work.blank_cells,
                     damaged=damaged)
    _draw_heatmap(args, run.model, run.source, run.grid, out, tiles.background)
    return _TilesComputed(out, len(todo), _top_scores(args, out))


def _opened_image(args: argparse.Namespace, model, grid):
    """--image opened for reading in tiles (`sources`), with the notes on how it is read
    (its resolution, bands, orientation, a TIFF's quirks), and refused where it is
    smaller than the crop."""
    from graphconv.sources import on_image
    from graphconv.tiling import DenseGrid

    source = _map_options(args, grid).open_image(model, args.image, getattr(args, "nodata", None))
    image_hw = (source.height, source.width)
    describe_resolution(on_image(source, grid.field)[0], args.mpp)  # the image's size, not --pad-image's
    note_how_the_raster_is_read(args, source)
    _drop_a_skip_background_that_does_nothing(args, source)
    from graphconv.cluster import stored_orientation_note
    from graphconv.sources import channel_conversion, tiff_notes
    for said in filter(None, [stored_orientation_note(source), *tiff_notes(source, bool(getattr(args, "mask", None)))]):
        note(f"note: {said}")
    note_how_the_image_is_read(args.image, channel_conversion(source))
    for said in model.size_notes(*image_hw) if isinstance(grid, DenseGrid) else []:
        note(said)
    crop_hw = model.crop_shape[1:]
    if image_hw[0] < crop_hw[0] or image_hw[1] < crop_hw[1]:
        raise GraphconvError(f"the image is {image_hw[0]}x{image_hw[1]}, smaller than the classifier's "
                             f"{crop_hw[0]}x{crop_hw[1]} crop{SMALLER_THAN_A_CROP_HINT}", file=args.image)
    return source


@dataclass(frozen=True)
class _PlannedTiles:
    """How an --image run's tiles are laid out (`_plan_the_tiles`): `plan` as the map is
    written, `computed_plan` as each run reads and holds it (smaller pieces where a resumed
    map's tiles are larger than the budget now allows), the tile's side and the budget it
    was chosen for, and the tissue or no-data finder (--skip-background, --mask, no-data)."""
    tile: int
    plan: TilePlan
    computed_plan: TilePlan
    piece_cells: tuple[int, int] | None
    budget: int
    background: Any


def _plan_the_tiles(args: argparse.Namespace, model, grid, image_hw: tuple[int, int], source) -> _PlannedTiles:
    """The tiles of an --image run: --tile's, a resumed partial map's, the cheapest over
    the tissue, or the largest the memory budget allows (spread over the workers); each
    choice said in a note, and refused where a tile cannot fit."""
    from graphconv.tiling import (balanced_tile, budget_beside, choose_tile, in_pieces, piece_cells_within,
                                  pieces_note, plan_tiles, spread_tile, tile_bytes)

    tile = args.tile
    at_once, worker_share = _tiles_at_once(args, model)
    whole_budget = _tile_budget(args, grid, image_hw, worker_share)
    budget = budget_beside(source, whole_budget)
    resumed_tile = None
    if tile is None and getattr(args, "resume", False):
        from graphconv.cluster import partial_map_tile
        tile = resumed_tile = partial_map_tile(args.output, grid, image_hw)
    background = _background(args, source, grid)
    whole = tile_bytes(grid, image_hw) if tile is None else None
    if tile is None and background is not None:
        tile = background.cheapest_tile(grid, image_hw, budget)
    cut_for_workers = False
    if tile is None:
        fitted = balanced_tile(grid, image_hw, choose_tile(grid, image_hw, budget))
        tile = spread_tile(grid, image_hw, fitted, at_once)
        cut_for_workers = tile != fitted
    plan = plan_tiles(grid, image_hw, tile)
    piece_cells = piece_cells_within(grid, plan, budget) if resumed_tile is not None else None
    computed_plan = in_pieces(grid, plan, piece_cells).plan  # what each run reads and holds
    if piece_cells is not None:
        print(f"note: {pieces_note(grid, plan, piece_cells, budget)}", file=sys.stderr)
    if whole is not None and whole > budget:  # the tiles as planned (whole cells: a few pixels under)
        reader = whole_budget - budget
        kept = f" ({format_size(budget)} of it beside the {format_size(reader)} the image's reader keeps)" \
            if reader else ""
        print(f"note: the whole {image_hw[0]}x{image_hw[1]} image would need {format_size(whole)}, "
              f"over the {format_size(whole_budget)} {_what_the_budget_is(args, worker_share)}{kept}: evaluating it "
              f"in exact tiles of up to {plan.tile_hw[0]}x{plan.tile_hw[1]} pixels", file=sys.stderr)
    if cut_for_workers:
        print(f"note: {len(plan.tiles)} tiles, smaller than the memory budget allows, for the workers to run "
              f"{at_once} at once", file=sys.stderr)
    check_fits(grid.peak_bytes(computed_plan.tile_hw),
               f"a {computed_plan.tile_hw[0]}x{computed_plan.tile_hw[1]} tile (use a smaller --tile)", file=args.image)
    _check_each_worker_s_tile_fits(args, grid, computed_plan, budget)
    return _PlannedTiles(tile, plan, computed_plan, piece_cells, budget, background)


def _print_what_was_done(run: _TiledRun, work: _TileWork, done: _TilesComputed, seconds: float,
                         damaged: DamagedCells | None) -> None:
    """The end of an --image run in tiles: damaged cells left out, the map's shape and
    time, the tiles computed of all (and why the others were not), --top's classes."""
    args, plan, computed, means = run.args, run.tiles.plan, done.computed, done.means
    if damaged is not None and damaged.cells:
        print(f"note: --skip-damaged: {damaged.describe()}", file=sys.stderr)
    of_all = f" of {len(plan.tiles)}" if computed < len(plan.tiles) else ""  # '9 tiles (3 ...)' read as 3 of the 9
    tiles = agreeing(len(plan.tiles), "tile", "tiles")
    skipped, blank = len(plan.tiles) - computed, len(work.blank_tiles)
    not_computed = _not_computed(skipped, blank, _left_out_over(run.tiles.background))
    print(f"output shape {run.shape} ({run.dtype}) in {seconds:.2f} s over {computed}{of_all} {tiles}{not_computed}")
    if means is not None and np.isnan(means).all():
        print("--top: no cell was computed (every one is over background or no-data), so there is no class to rank")
    elif means is not None:
        from graphconv.scales import kept_labels
        print_top(means, args.top, kept_labels(run.model.graph.meta.get("labels"), args.classes),
                  top_basis(done.out, getattr(args, "top_by", None)) + " (the computed ones)")
    if args.output:
        print(f"-> {args.output}")


def _kept_as_another_run_finished_it(output: str) -> int:
    """--resume beside another run resuming the same partial map (a requeued job beside
    its predecessor): this run waited for it (`cluster.waiting_note`), and it finished the
    map, which is this run's to the bit (`PartialMap.check` found the same job)."""
    print(f"note: another graphconv run finished {output} while this one waited (it was resuming the same "
          "partial map: the same image, model and settings): its map is kept as it is (and --top and --heatmap "
          "are that run's)", file=sys.stderr)
    print(f"-> {output}")
    return 0


@contextmanager
def _out_of_memory_in_a_tile(args: argparse.Namespace, grid, plan, budget: int) -> Iterator[None]:
    """A MemoryError while the tiles run: the machine had less free than the budget the
    tiles were sized to (other processes, a ulimit, a container's limit), and "ran out of
    memory" alone left the user to guess what to change. Say what the tile needed, and
    the --tile of about half its side with what that one needs."""
    try:
        yield
    except MemoryError:
        from graphconv.tiling import choose_tile, tile_bytes
        height, width = plan.tile_hw
        need = tile_bytes(grid, plan.tile_hw)
        try:
            half = choose_tile(grid, (height, width), tile_bytes(grid, (height // 2, width // 2)))
            smaller = f"--tile {half} (about {format_size(tile_bytes(grid, (half, half)))}), or "
        except GraphconvError:  # already the smallest tile the network takes
            smaller = ""
        raise GraphconvError(
            f"ran out of memory in a {height}x{width} tile, which needs about {format_size(need)} (the "
            f"{format_size(budget)} {_what_the_budget_is(args)} allows it): this machine has less free than that "
            f"now; pass {smaller}a --memory-limit under what it has free (tiles are sized to the limit)",
            file=args.image) from None


def _note_a_wasteful_tile(grid, image_hw: tuple[int, int], plan, budget: int, background=None) -> None:
    from graphconv.tiling import wasteful_tile_note

    said = wasteful_tile_note(grid, image_hw, plan, budget, background)
    if said:
        print(f"note: {said}", file=sys.stderr)


def describe_resolution(source, asked: float | None = None) -> None:
    """Which pixels the network reads, on stderr, where that is not the file's own (a
    pyramid's level, the image read coarser: --downsample, or --mpp's `asked`
    micrometres) or the file says their size. The cells' placement (`cells:`) is in
    level-0 pixels whichever was read: said, where they differ."""
    levels, factor = getattr(source, "levels", 1), getattr(source, "factor", 1)
    microns = getattr(source, "microns_per_pixel", None)
    stated = getattr(source, "pixel_size_stated", None)
    oblong = stated if microns is None and isinstance(stated, tuple) else None  # not square
    if levels == 1 and factor == 1 and microns is None and oblong is None:
        return
    parts = []
    if levels > 1:
        parts.append(f"level {source.level} of a {levels}-level pyramid" if source.level
                     else f"level 0, the full resolution, of a {levels}-level pyramid")
    if factor > 1:
        parts.append(f"averaged in {factor}x{factor} blocks" if factor == int(factor)
                     else f"area-averaged over {factor:.4g}x{factor:.4g} squares")
    downsample = getattr(source, "downsample", 1)
    if downsample != 1:
        parts.append(f"{downsample:.4g}x coarser than level 0")
    if microns is not None:
        parts.append(f"{microns * downsample:.4g} µm per pixel" + _as_asked(microns * downsample, asked))
    if oblong is not None:
        parts.append(f"pixels of {oblong[0]:.4g} µm high by {oblong[1]:.4g} µm wide at level 0 as the file states: "
                     "not square, so the map gives its cells no size in µm and --mpp cannot read it")
    counted = "; cells are placed in level-0 pixels all the same" if downsample != 1 else ""
    print(f"image: {source.height}x{source.width} pixels, {', '.join(parts)} (the network reads these{counted})",
          file=sys.stderr)


def _as_asked(microns: float, asked: float | None) -> str:
    """What --mpp asked, beside the pixel size read: and how much coarser that is where
    the slide has no pixels as fine (a 0.55 µm scan read for --mpp 0.5: 10% coarser
    than the classifier's training resolution, which a user checking the map should know)."""
    if not asked:
        return ""
    from graphconv.sources import MPP_EQUAL

    if microns <= asked * MPP_EQUAL:
        return f" (--mpp {asked:g})"
    return (f" (--mpp {asked:g}: {microns / asked - 1:.0%} coarser, the slide's finest pixels; graphconv does not "
            "enlarge images)")


def _top_scores(args: argparse.Namespace, scores) -> np.ndarray | None:
    """--top's input (`classes.class_scores`, by --top-by), or None without --top."""
    if not args.top or args.reduce == "argmax":
        return None
    return class_scores(scores, getattr(args, "top_by", None))


def _map_georeference(args: argparse.Namespace, source, grid):
    """A .tif or .zarr map's georeference: the image's, where it is a GeoTIFF, moved to
    the map's cells (`graphconv.georef`); said on stderr. None for other outputs and
    images."""
    from graphconv.georef import cell_size, georeference_of_map, is_tiff_output

    zarr = is_zarr_path(args.output)
    geo = georeference_of_map(source, grid.cell_area) if is_tiff_output(args.output) or zarr else None
    if geo is not None:
        width, height = cell_size(geo)
        how = (f"by its {len(geo.gcps)} ground control points moved onto the map's cells (GIS tools fit the "
               "warp): cells of about" if geo.gcps is not None else "cells of")
        print(f"map georeferenced as the image, {how} {width:.6g} x {height:.6g} in the image's map units, "
              f"{_coordinate_system(geo)}", file=sys.stderr)
    return geo


def _coordinate_system(geo) -> str:
    """Which coordinate system a map's georeference is in, as its line says it: a scene
    with a transform but no GeoKeys was said to be "in its projection"."""
    from graphconv.georef import GEO_KEY_DIRECTORY

    if geo.epsg:
        return f"in EPSG:{geo.epsg}"
    if any(code == GEO_KEY_DIRECTORY for code, _, _ in geo.keys):
        return "in its coordinate system (no EPSG code: as the image's GeoKeys define it)"
    return "with no coordinate system (the image names none: a GIS places it only by its numbers)"


def _compute(args, grid, source, plan, tile, out, transform, on_tile, blank_cells, done=frozenset(),
             damaged=None, piece_cells=None) -> None:
    from graphconv.tiling import run_tiled

    if len(done) == len(plan.tiles):
        return  # a resumed run whose tiles were all in: only the map's finish is left
    if args.workers or args.scheduler:
        from graphconv.cluster import client_for, run_tiles_on_cluster
        with client_for(args.workers or 1, args.scheduler, args.threads) as client:
            run_tiles_on_cluster(client, _model_ref(args), str(Path(args.image).resolve()), plan, out,
                                 _map_options(args, grid), on_tile, blank_cells, done, damaged, piece_cells)
    else:
        run_tiled(grid, source, tile, out=out, device=args.device, transform=transform, progress=on_tile,
                  blank_cells=blank_cells, done=done, damaged=damaged, piece_cells=piece_cells)


def _job(args: argparse.Namespace, model, grid, source, plan, shape, dtype) -> dict:
    """What this --resume run computes (`cluster.resume_job`)."""
    from graphconv.cluster import resume_job
    return resume_job(_model_ref(args), model, args.image, source, _map_options(args, grid), plan, shape, dtype)


def _advance_if_computed(advance, tile, blank_tiles: frozenset) -> None:
    """Move the progress bar for a tile the network computed; a tile over background
    alone (written as not computed in no time) is not in the bar's total, so it neither
    moves the bar nor speeds up its rate and time left."""
    if tile not in blank_tiles:
        advance(1, tile.pixels)


def _not_computed(skipped: int, blank: int, over: str = "background") -> str:
    """The final line's account of the `skipped` tiles not computed, `blank` of them over
    background (or, `over`, no-data) alone: ' (82 over background only, 40 done before)';
    '' when none was skipped (the line counted skipped glass as tiles computed)."""
    parts = [f"{blank} over {over} only"] if blank else []
    parts += [f"{skipped - blank} done before"] if skipped > blank else []
    return f" ({', '.join(parts)}, not computed)" if parts else ""


def _say_resumed(map_file, plan, blank_tiles: frozenset = frozenset(), over: str = "background") -> None:
    """--resume: how many tiles an earlier run computed into the partial map, skipped now,
    and how many are left to compute. The tiles over background alone (`_skipper`) are
    not computed, listed as done or not (a --workers run writes them first), so they are
    counted apart, once, as the final line counts them (`_not_computed`): the counts add
    up to the plan's tiles."""
    total = len(plan.tiles)
    done = len(map_file.done - blank_tiles)
    where = map_file.partial.shown
    if map_file.damaged:
        damaged = len(map_file.damaged)
        print(f"resume: {counted(damaged, 'tile')} listed as done in {where} {agreeing(damaged, 'has', 'have')} "
              "blocks missing, unreadable or changed there (the partial map was damaged since): computing "
              f"{agreeing(damaged, 'it', 'them')} again", file=sys.stderr)
    if done:
        background = len(blank_tiles)
        also = (f" ({background} more {agreeing(background, 'holds', 'hold')} only {over} and "
                f"{agreeing(background, 'is', 'are')} not computed)" if background else "")
        print(f"resume: {done} of {counted(total, 'tile')} {agreeing(done, 'was', 'were')} done by an earlier run "
              f"({where}) and {agreeing(done, 'is', 'are')} skipped; "
              f"computing {total - done - background}{also}", file=sys.stderr)
    else:
        print(f"resume: writing into {where} (kept if the run stops; the same command with --resume continues "
              "it); renamed into place when complete", file=sys.stderr)


def _partial_map_beside(output: str, job: dict):
    """A run without --resume beside a stopped --resume run's partial map. Of this same
    job: returned, to be removed once this run has written the whole map over it
    (`_remove_a_partial_map_written_over`: it was left behind, stale, while the note
    still said --resume continued it); if this run stops, it is kept as it was. Of
    another job: left as it is, and said once; None."""
    from graphconv.tiling import PartialMap, stopped_partial_map

    partial, differences = stopped_partial_map(output, job)
    if differences:
        other = PartialMap(output)
        note(f"note: {other.shown} holds {counted(other.count_done(), 'tile')} of a stopped --resume run of "
             f"another job ({'; '.join(differences)}); left as it is: that run's command with --resume continues it "
             "(and replaces this map), or delete it")
    return partial


def _say_stale_tiles_removed(partial, image: str) -> None:
    text = partial.stale_tiles_note(image)
    if text:
        print(f"note: {text}", file=sys.stderr, flush=True)


def _remove_a_partial_map_written_over(partial) -> None:
    """This run (without --resume) wrote the whole map a stopped --resume run of the same
    job had begun in `partial`: that partial map holds nothing more, so it goes, said
    once (not while another run is resuming it)."""
    done = partial.count_done()
    if not partial.remove_unless_in_use():
        note(f"note: {partial.shown}, a stopped --resume run's partial map of this same map, is left as it is: "
             "another run is writing it now")
        return
    note(f"note: removed {partial.shown}, the {counted(done, 'tile')} a stopped --resume run of this same map "
         "had done: this run computed the whole map without --resume (with --resume it goes on from such a partial map)")


def _left_out_over(background) -> str:
    """What the cells a run leaves out lie over, for its counts: a raster's no-data (its
    `Background` judges by that alone), or --skip-background's background."""
    if background is not None and background.masked:
        return "the mask's outside"
    return "no-data" if background is not None and background.has_nodata else "background"


def _drop_a_skip_background_that_does_nothing(args: argparse.Namespace, source) -> None:
    """--skip-background on a raster with no-data (a GeoTIFF's GDAL no-data tag, a zarr
    _FillValue, --nodata, a float raster's NaN): its cells are judged by their no-data
    alone, with or without the flag (`background.Background`), so the flag changed
    nothing yet was recorded in the map and in --resume's job (a --resume without it was
    refused). Say so once, and run as without it."""
    if args.skip_background is None:
        return
    from graphconv.sources import nodata_can_occur, nodata_named

    raster = getattr(source, "inner", source)
    if not nodata_can_occur(raster):  # no pixel can be no-data: the tissue test applies
        return
    args.skip_background = None
    note(f"note: --skip-background does nothing here: {args.image} is a raster with no-data (the image's "
         f"{nodata_named(raster)}), whose cells "
         "are left out by their no-data (--max-nodata) with or without it, and the tissue test (colour on a bright "
         "background) is not applied to it; the run is the one without the flag (its map and --resume's job do "
         "not record it)")


def _background(args: argparse.Namespace, source, grid):
    """The cells the run leaves out (graphconv/background.py): a raster's no-data, by
    default; --skip-background's glass; or None."""
    from graphconv.background import DEFAULT_MAX_NODATA, cells_left_out
    from graphconv.sources import on_image

    image, _ = on_image(source, grid.field)  # a mask spans the image itself, not --pad-image's border
    mask = _placed_mask(args, image) if args.mask else None
    return cells_left_out(source, grid, args.skip_background, getattr(args, "max_nodata", DEFAULT_MAX_NODATA), mask,
                          getattr(args, "skip_damaged", False))


def _placed_mask(args: argparse.Namespace, image) -> np.ndarray:
    """--mask, stretched over the image by its pixels (`background.load_mask`); refused
    where both are georeferenced over other areas or in other CRSs (a GeoTIFF mask of a
    quarter of the scene put its marks over the whole scene)."""
    from graphconv.background import load_mask
    from graphconv.georef import image_georeference, mask_misplaced

    mask = load_mask(args.mask, (image.height, image.width))
    raster = getattr(image, "inner", image)
    level0_hw = getattr(raster, "full_hw", (raster.height, raster.width))
    problem = mask_misplaced(args.mask, mask.shape, image_georeference(args.image), level0_hw)
    if problem:
        raise GraphconvError(problem, file=args.mask)
    return mask


def _skipper(args: argparse.Namespace, background, plan):
    """Which cells are left out (`Background.blank_cells`), said in a note, and the tiles
    of such cells alone, which are not computed (known before the run, so the progress
    bar counts only the tiles that are); (None, frozenset()) when no cell is left out."""
    if background is None:
        return None, frozenset()
    blank = [t for t in plan.tiles if background.is_blank(t)]
    tiles, cells = len(blank), sum(background.blank_count(t) for t in plan.tiles)
    total = plan.map_hw[0] * plan.map_hw[1]
    filler = "NaN" if args.reduce != "argmax" else "65535"
    skipped = (f"{tiles} of {counted(len(plan.tiles), 'tile')} {agreeing(tiles, 'holds', 'hold')} only such cells "
               f"and {agreeing(tiles, 'is', 'are')} skipped")
    not_computed = f"{agreeing(cells, 'is', 'are')} not computed ({filler})"
    if background.masked:
        print(f"mask: {counted(cells, 'cell')} {agreeing(cells, 'lies', 'lie')} outside {args.mask} (no marked "
              f"pixel near {agreeing(cells, 'its', 'their')} centre"
              f"{', or over no-data' if background.has_nodata else ''}) and {not_computed}; "
              f"{skipped}", file=sys.stderr)
    elif not background.has_nodata:
        print(f"background: {counted(cells, 'cell')} {agreeing(cells, 'shows', 'show')} no tissue near "
              f"{agreeing(cells, 'its', 'their')} centre and {not_computed}; "
              f"{skipped}", file=sys.stderr)
        if cells and cells == total:
            note(f"note: --skip-background {args.skip_background:g} found no tissue anywhere: the map holds no "
                 "computed cell. The test looks for colour, or in a grey image darkness, on a bright background "
                 "(brightfield slides, scanned pages): for a fainter stain give a smaller threshold, for a dark "
                 "background (fluorescence) run without --skip-background")
    elif cells:
        from graphconv.sources import nodata_named
        value = nodata_named(background.image)
        note(f"note: {cells} of {counted(total, 'cell')} ({cells / total:.0%}) {agreeing(cells, 'is', 'are')} not "
             f"computed ({filler} in the map): more "
             f"than {background.max_nodata:.0%} of each one's crop is no-data (the image's {value}); "
             f"{skipped}. --max-nodata FRACTION sets that share, --compute-nodata computes every cell "
             "(no-data pixels go into the network as 0 after the preprocess)")
    return background.blank_cells, frozenset(blank)  # the tiles worked out once, for this message, the bar and the run


def _check_heatmap(args: argparse.Namespace, classes: int, labels: list[str] | None) -> None:
    """Refuse, before the run, a --heatmap the map it writes cannot draw (classes by their
    names too, where the model has labels: the user may have named them)."""
    if args.heatmap is None or args.heatmap == "top":
        return
    check_heatmap_class(args.heatmap, classes)
    if args.reduce == "argmax":
        raise GraphconvError(f"--heatmap {args.heatmap} draws that class's scores, which --reduce argmax does "
                             "not keep: use --heatmap top, or drop --reduce argmax")
    if args.classes and args.heatmap not in args.classes:
        def shown_class(index: int) -> str:
            named = labels and index < len(labels) and labels[index] != str(index)
            return f"{index} ({labels[index]})" if named else str(index)
        raise GraphconvError(f"--heatmap {shown_class(args.heatmap)}: that class is not among --classes "
                             f"{','.join(map(shown_class, args.classes))}")


def _check_heatmap_bands(args: argparse.Namespace, source) -> None:
    """Refuse, before the run, --heatmap-bands the image does not have (or a picture's,
    which is drawn as it is)."""
    bands = getattr(args, "heatmap_bands", None)
    if args.heatmap is None or not bands:
        return
    have = getattr(source, "band_count", None)
    if have is None:
        raise GraphconvError("--heatmap-bands picks bands of a raster (a TIFF or a zarr array); this image is a "
                             "picture, and its heatmap is drawn over it as it is", file=source.path)
    outside = [b for b in bands if b > have]
    if outside:
        raise GraphconvError(f"--heatmap-bands {','.join(map(str, bands))}: the image has bands 1 to {have}, not "
                             f"{','.join(map(str, outside))}", file=source.path)


def _heatmap_picture(args: argparse.Namespace, image, background) -> tuple[np.ndarray, tuple[float, float]]:
    """What a tiled run's heatmap is drawn over, and how many of the image's pixels one of
    its pixels spans: --heatmap-bands's bands; else the copy --skip-background made, or
    the image's bands as the network takes them (the first alone, grey, where they make
    no picture: said, with the flag that picks others)."""
    from graphconv.sources import PICTURE_CHANNELS, thumbnail

    bands = getattr(args, "heatmap_bands", None)
    if bands:
        _check_heatmap_bands(args, image)  # each image of a batch
        return thumbnail(image, bands=bands)
    picture, scale = (background.picture, background.scale) if background is not None else thumbnail(image)
    if getattr(image, "channels", 1) not in PICTURE_CHANNELS:  # the bands the network takes make no picture
        note(f"note: the heatmap is drawn over the first of the {image.channels} bands the network takes, grey: "
             "--heatmap-bands R,G,B draws it over three bands of your choice (a Sentinel-2 scene's true colour: "
             "4,3,2)")
    return picture, scale


BEST_CLASS_FLOATS = 1 << 24  # scores a block of rows of a huge map may hold when its best classes are found


def _draw_heatmap(args: argparse.Namespace, model, source, grid, scores, background) -> None:
    """--heatmap on a tiled run: the map drawn over a shrunk copy of the image
    (`sources.thumbnail`, from a coarse pyramid level where there is one; the one
    --skip-background's `background` found tissue in, where it made one: an image without
    levels is read whole to make it), each cell's field shrunk alike. The map is read a
    block of rows at a time (`_sample_map`): only the cells the picture's pixels show are
    kept, with the whole map's range or class counts. A padded image's map (--pad-image)
    is drawn over the image itself, its cells shifted back by the border."""
    if args.heatmap is None:
        return
    from graphconv import images
    from graphconv.sources import on_image

    image, field = on_image(source, grid.cell_area)  # each cell where its crop stands, as the map's metadata says
    picture, (fy, fx) = _heatmap_picture(args, image, background)
    field = _shrunk(field, fy, fx)
    if args.heatmap == "top":
        cut = None if args.reduce == "argmax" else images.call_cut(model.graph, model.output_channels)
        sample = _sample_map(args, scores, field, picture.shape[1:], model.output_channels, cut=cut)
        draw_heatmap(args, model, picture, field, best=sample.values, sample=sample)
    else:
        channel = list(args.classes).index(args.heatmap) if args.classes else args.heatmap
        sample = _sample_map(args, scores, field, picture.shape[1:], channel=channel)
        draw_heatmap(args, model, picture, field, one=sample.values, sample=sample)


def _shrunk(field, fy: float, fx: float):
    """A receptive field in the pixels of a copy of the image fy x fx times smaller."""
    from graphconv.receptive import Field
    return Field((field.size[0] / fy, field.size[1] / fx), (field.stride[0] / fy, field.stride[1] / fx),
                 (field.offset[0] / fy, field.offset[1] / fx))


def _sample_map(args: argparse.Namespace, scores, field, picture_hw: tuple[int, int], classes: int = 0,
                channel: int | None = None, cut: float | None = None):
    """The cells of the (1, K, rows, cols) map written that the heatmap's pixels show
    (`images.MapSample`), read a block of rows at a time (a stride-1 slide's map has
    billions of cells; the picture at most THUMBNAIL_SIDE a side): class `channel`'s
    scores and the whole map's finite range, or (channel None) the best class of each
    (real class numbers, with --classes too; --reduce argmax wrote them) and how many
    cells of the map each of the model's `classes` is best in (`cut`: and where none is
    called, `images.best_class`)."""
    from graphconv import images

    _, kept_classes, rows, cols = scores.shape
    ys, xs = images.cell_index_map(field, rows, cols, *picture_hw)
    (cell_rows, at_y), (cell_cols, at_x) = (np.unique(ys, return_inverse=True), np.unique(xs, return_inverse=True))
    values = np.empty((len(cell_rows), len(cell_cols)), np.float32 if channel is not None else np.intp)
    counts = np.zeros(classes, np.int64)
    not_computed = no_call = 0
    low, high = np.inf, -np.inf
    per_row = cols * (1 if channel is not None or args.reduce == "argmax" else kept_classes)
    step = max(1, BEST_CLASS_FLOATS // per_row)
    for top in range(0, rows, step):
        if channel is not None:
            block = np.asarray(scores[0, channel, top:top + step], np.float32)
            extremes = images.finite_range(block)
            if extremes:
                low, high = min(low, extremes[0]), max(high, extremes[1])
            not_computed += int(np.count_nonzero(np.isnan(block)))
        else:
            block = _best_of(args, np.asarray(scores[0, :, top:top + step]), cut)
            counts += np.bincount(block[block >= 0], minlength=classes)[:classes]
            not_computed += int(np.count_nonzero(block == images.NOT_COMPUTED))
            no_call += int(np.count_nonzero(block == images.NO_CALL))
        shown = (cell_rows >= top) & (cell_rows < top + step)
        values[shown] = block[cell_rows[shown] - top][:, cell_cols]
    return images.MapSample(values, (cell_rows, cell_cols), (at_y, at_x), (rows, cols),
                            extremes=(low, high) if low <= high else None, counts=counts, not_computed=not_computed,
                            no_call=no_call)


def _best_of(args: argparse.Namespace, block: np.ndarray, cut: float | None = None) -> np.ndarray:
    """The best class of each cell of a (K, rows, cols) block of the map written (real class
    numbers, with --classes too; a --reduce argmax map holds them), images.NOT_COMPUTED
    where none was computed, images.NO_CALL where the best score is under `cut` (or the
    class map says so)."""
    from graphconv import images
    from graphconv.background import NO_CALL_CLASS, NO_CLASS

    if args.reduce == "argmax":
        best = block[0].astype(np.intp)
        return np.select([best == NO_CLASS, best == NO_CALL_CLASS], [images.NOT_COMPUTED, images.NO_CALL], best)
    best = images.best_class(block, cut)
    if not args.classes:
        return best
    return np.where(best < 0, best, np.asarray(args.classes, np.intp)[best])


def _map_options(args: argparse.Namespace, grid):
    from graphconv.background import DEFAULT_MAX_NODATA
    from graphconv.cluster import MapOptions
    from graphconv.tiling import CropGrid

    return MapOptions(reduce=args.reduce if args.reduce == "argmax" else None,
                      classes=tuple(args.classes) if args.classes else None, device=args.device,
                      crops=grid.stride if isinstance(grid, CropGrid) else None, level=args.level,
                      skip_background=args.skip_background, bands=tuple(args.bands) if args.bands else None,
                      downsample=args.downsample, mpp=args.mpp, traceback=getattr(args, "traceback", False),
                      max_nodata=getattr(args, "max_nodata", DEFAULT_MAX_NODATA), nodata=getattr(args, "nodata", None),
                      memory_limit=_budget_per_process(args, grid.model), resume=getattr(args, "resume", False),
                      resize=tuple(args.resize) if args.resize else None, mask=getattr(args, "mask", None),
                      pad_image=getattr(args, "pad_image", None), top=getattr(args, "top", None),
                      top_by=getattr(args, "top_by", None), skip_damaged=getattr(args, "skip_damaged", False),
                      **_scales_options(args))


def _scales_options(args: argparse.Namespace) -> dict:
    """--images --scales' MapOptions: the shorter sides, --flip and --reduce mean|max."""
    if not getattr(args, "scales", None):
        return {}
    return {"scales": tuple(args.scales), "flip": args.flip, "scales_reduce": args.reduce or "mean"}


def _tiles_at_once(args: argparse.Namespace, model) -> tuple[int, int | None]:
    """How many tiles the run's workers take at once, and what each may take where the
    workers say it: a --scheduler's, from its workers' memory limits and threads
    (`cluster.scheduler_capacity`; asked of the scheduler, which must answer anyway)."""
    if args.scheduler:
        from graphconv.cluster import scheduler_capacity
        from graphconv.memory import weight_bytes
        return scheduler_capacity(args.scheduler, weight_bytes(model.graph))
    return args.workers or 1, None


def _tile_budget(args: argparse.Namespace, grid, image_hw: tuple[int, int], worker_share: int | None = None) -> int:
    """What one tile's run may take: the command's budget, less the score map where it
    is held in memory (no --output), shared among a local cluster's workers, each of which
    runs a tile at a time beside the others (with --workers 2 each tile was chosen for the
    whole budget: 758 MB -> 2.1 GB under a 1 GB limit). On a --scheduler's workers, which
    have their own machines, --memory-limit where given, else `worker_share` (the tightest
    worker's, `_tiles_at_once`), else the command's budget."""
    if args.scheduler:
        explicit = getattr(args, "memory_limit", None) is not None
        return memory_limit() if explicit or worker_share is None else worker_share
    held = 0 if args.output else FLOAT_BYTES * grid.model.output_channels * math.prod(grid.map_hw(image_hw))
    budget = max(memory_limit() - held, memory_limit() * 3 // 4)
    return _each_local_worker_s_share(args, grid.model, budget) if args.workers else budget


def _each_local_worker_s_share(args: argparse.Namespace, model, budget: int) -> int:
    """What each of a local cluster's --workers may take for its tiles or images: the
    budget, less what the cluster itself holds outside any tile (a process of Python,
    numba and dask a worker, and the command's own copy of the model), in N parts. Each
    worker's share counts its own copy of the weights, as a lone run's budget does. Split
    without those, AlexNet with --workers 2 in a 1.5 GB batch job held three models and
    three processes beside two half-budget tiles, and the kernel killed it."""
    from graphconv.cluster import WORKER_PROCESS_BYTES
    from graphconv.memory import weight_bytes

    outside = args.workers * WORKER_PROCESS_BYTES + weight_bytes(model.graph)
    if outside >= budget:
        raise GraphconvError(f"--workers {args.workers}: their processes and this command's copy of the model hold "
                             f"about {format_size(outside)}, leaving nothing of the {format_size(budget)} memory "
                             "budget for tiles: give fewer --workers or a higher --memory-limit")
    return (budget - outside) // args.workers


def _check_each_worker_s_tile_fits(args: argparse.Namespace, grid, plan, budget: int) -> None:
    """A --tile with local --workers: N tiles run at once on this machine, each worker
    holding its own weights, so each must fit the limit's share, as automatic tiles are
    chosen to. Checked against the whole limit, `--tile 1200 --workers 2` under 1G was let
    through and took twice the limit."""
    if not args.workers or args.scheduler:
        return
    from graphconv.tiling import tile_bytes
    need = tile_bytes(grid, plan.tile_hw)
    if need > budget:
        height, width = plan.tile_hw
        raise GraphconvError(f"a {height}x{width} tile needs about {format_size(need)}, over the {format_size(budget)} "
                             f"{_what_the_budget_is(args)}: use a smaller --tile, fewer --workers, or a higher "
                             "--memory-limit", file=args.image)


def _what_the_budget_is(args: argparse.Namespace, worker_share: int | None = None) -> str:
    if args.scheduler and worker_share is not None and getattr(args, "memory_limit", None) is None:
        return ("a task may take on the Dask workers (the tightest worker's memory limit below where dask starts "
                "spilling, less what its process holds, shared among its threads; --memory-limit sets it)")
    if args.workers and not args.scheduler:
        return (f"{'the worker' if args.workers == 1 else f'each of the {args.workers} workers'} may take (the "
                f"memory limit less the workers' processes and "
                "this command's copy of the model, shared)")
    return "budget"


def _budget_per_process(args: argparse.Namespace, model) -> int | None:
    """The memory budget of each process mapping images: the command's own, shared among
    a local cluster's workers (one machine: `_each_local_worker_s_share`); on a
    --scheduler's, each of which has its own machine, --memory-limit where given (each
    worker's), else None: each worker's default."""
    if args.scheduler:
        return memory_limit() if getattr(args, "memory_limit", None) is not None else None
    return _each_local_worker_s_share(args, model, memory_limit()) if args.workers else memory_limit()


def _model_ref(args: argparse.Namespace):
    from graphconv.cluster import ModelRef

    absolute = lambda p: str(Path(p).resolve()) if p else None
    return ModelRef(absolute(args.model), absolute(args.weights), absolute(args.labels),
                    tuple(args.crop_size) if args.crop_size else None, args.task, args.activation)


def run_images_command(args: argparse.Namespace) -> int:
    """One map per image; a bad image is reported on stderr, the others are written.
    Exit status 2 when any image failed. What concerns the whole batch is refused
    before any image is read (one error, not one an image) and before anything is
    written."""
    from graphconv.manifest import Manifest

    _refuse_what_a_batch_cannot_take(args)
    images, base = _the_batch_s_images(args)
    if not images:
        return 0  # its --shard holds none of the batch's images (said)
    _check_output_dir(args.output_dir)
    batch = _checked_batch(args, images, base)
    images = _images_left_to_map(batch, images)
    if not images:
        return 0  # every one has its map already (said)
    earlier = Manifest(args.output_dir)  # the folder's list as this run finds it: read once, for both
    replaceable = _npy_maps_there(args, images, base, earlier)
    _note_maps_elsewhere(args, images, base, earlier)
    if not (args.workers or args.scheduler):  # said now, not after a first image's silent 40 s (a photo review)
        note_cold_kernels(batch.model, args.device)
    start = time.perf_counter()
    results, stale_heatmaps = _images_mapped(batch, images)
    failed = _say_what_the_batch_did(batch, results, replaceable, stale_heatmaps)
    print(f"{len(results) - len(failed)} of {counted(len(results), 'image')} -> {args.output_dir} in "
          f"{time.perf_counter() - start:.1f} s")
    return 2 if failed else 0


def _refuse_what_a_batch_cannot_take(args: argparse.Namespace) -> None:
    """Refuse, before the images are even looked for, the options a batch has no use for:
    its maps go into --output-dir, one an image, and --scales' vectors are made of
    pictures read whole."""
    if not args.output_dir:
        raise GraphconvError("--images needs --output-dir")
    if args.output or args.profile:
        raise GraphconvError("--images writes one map per image into --output-dir; --output and --profile take "
                             "one --image")
    if args.scales and (args.heatmap is not None or args.tile or args.classes or args.skip_background is not None
                        or args.resume or args.output_format == "tif" or args.mpp is not None or args.level):
        raise GraphconvError("--scales gives each picture one class vector (an .npy of (1, K)), read whole: not "
                             "with --heatmap, --tile, --classes, --skip-background, --resume, --output-format tif, "
                             "--mpp or --level")


def _the_batch_s_images(args: argparse.Namespace) -> tuple[list[str], str]:
    """The images --images names (refused where none is one graphconv reads), --shard's
    part of them, and the folder their maps' folders mirror below --output-dir (of the
    whole batch, so every --shard places each map alike). No images where the --shard
    holds none, said: that task has nothing to do."""
    images = _image_paths(args.images)
    if not images:
        _no_images(args.images)
    if args.scales:
        _refuse_scales_of_rasters_only(args.images, images)
    base = _list_base(images) if _is_a_list(args.images) else pattern_base(args.images)
    if args.shard:
        images = _shard_of(images, *args.shard)
        if not images:
            print(f"part {args.shard[0]} of {args.shard[1]} (--shard) holds none of the batch's images: nothing to "
                  "do")
    return images, base


@dataclass(frozen=True)
class _Batch:
    """An --images run as `_checked_batch` settled it, every check passed: the model as
    the workers load it (`ref`) and as loaded here once (the images mapped in this
    process use it too), its grid, the `options` every image is mapped with, and the
    folder the maps' folders mirror below --output-dir (`base`)."""
    args: argparse.Namespace
    ref: Any
    model: Any
    grid: Any
    options: Any
    base: str


def _checked_batch(args: argparse.Namespace, images: list[str], base: str) -> _Batch:
    """The model loaded once, and every check of the batch as a whole made before any
    image is read: a bad model, --tile, --heatmap or --output-format is one error here,
    not one per image."""
    from graphconv.cluster import worker_model
    from graphconv.files import spare_the_model

    ref = _model_ref(args)
    model = worker_model(ref)  # loaded once: the images mapped in this process use it too
    spare_the_model(model, [("--output-dir", args.output_dir)])  # a compiled model's folder holds no maps
    resolve_class_names(args, model.graph.meta.get("labels"))
    note_pixels_as_they_are(args, model)
    grid = grid_for(args, model)
    options = _map_options(args, grid)  # a bad model is one error here, not one per image
    if args.skip_existing or args.resume:
        options = replace(options, listed_in=os.path.abspath(args.output_dir))
    if args.tile:
        from graphconv.tiling import check_tile_holds_a_cell
        check_tile_holds_a_cell(grid, args.tile)  # and a --tile too small for it
    check_heatmap_has_a_map(args, model)  # the more telling error for a classifier as written
    _check_the_model_makes_the_maps_asked(args, model)
    _check_the_network_takes_the_images(args, model, images, options)
    _check_heatmap(args, model.output_channels, model.graph.meta.get("labels"))
    _check_heatmap_names(args, images, base)
    return _Batch(args, ref, model, grid, options, base)


def _check_the_model_makes_the_maps_asked(args: argparse.Namespace, model) -> None:
    """Refuse what the model cannot give the batch: --scales of a classifier as written
    (it sees one crop), or .tif maps of one that gives one class vector per image
    (tifffile's IndexError, one an image); and .tif maps without tifffile."""
    if args.scales and model.returns_vectors:
        raise GraphconvError("--scales slides the network over each picture at each scale: compile the model first "
                             "(graphconv compile), a classifier with fc layers sees one crop", file=args.model)
    if args.output_format == "tif":  # one error, not one an image
        from graphconv.sources import require
        require("tifffile")
    if args.output_format == "tif" and model.returns_vectors and args.crops is None:  # tifffile's IndexError
        raise GraphconvError(f"--output-format tif writes maps; {model.graph.name} as written gives one class vector "
                             "per image: --output-format npy")


def _images_left_to_map(batch: _Batch, images: list[str]) -> list[str]:
    """--skip-existing or --resume: the images whose map is not in --output-dir yet (or
    whose heatmap could not be drawn from it), the maps kept ranked for --top; none, said,
    where every image has its map. Without them, every image."""
    args = batch.args
    if args.skip_failed:
        images = _images_not_failed_alike(batch, images)
        if not images:
            print(f"every image failed in {args.output_dir} before, as it is now (--skip-failed): no map to make")
            return images
    if not (args.skip_existing or args.resume):
        return images
    images, kept = _images_not_done(args, batch.ref, batch.model, images, batch.base, batch.options)
    images += _heatmaps_drawn_from_kept_maps(args, batch.model, batch.grid, kept)
    _rank_kept_maps(args, batch.model, batch.options,
                    [(image, output) for image, output in kept if image not in images])
    if not images:
        flag = "--skip-existing" if args.skip_existing else "--resume"
        print(f"every image has its map in {args.output_dir} already ({flag}): no map to make")
    return images


def _images_mapped(batch: _Batch, images: list[str]) -> tuple[list, list[str]]:
    """Each image mapped (by --workers or a --scheduler's cluster, or here), into an
    --output-dir made for the run (removed where a stopped run leaves it empty; a
    stopped batch says how to go on), each image's heatmap drawn and its error or --top
    said as it is done. The results, with their heatmaps' errors, and the heatmaps of
    earlier maps removed."""
    from graphconv.cluster import client_for, run_images

    args = batch.args
    done, explained, stale_heatmaps = {}, set(), []
    with _output_dir_made(args.output_dir, images), _say_how_to_go_on(args, images, batch.base):
        with _progress(args, len(images), "images", None) as bar:
            def progress(result):
                """Each image as it is done: its heatmap drawn now (a stopped batch keeps the
                heatmaps of the maps it kept, and drawing overlaps the workers' next maps),
                and its error said now, not after the last of 10,000 photos."""
                if not result.error:
                    stale_heatmaps.extend(_remove_heatmaps_of_earlier_maps(result.output))
                result = done[result.image] = _with_heatmap(args, batch.model, batch.grid, result)
                if result.error:
                    bar.say(_error_line(result, explained))
                elif result.top is not None:
                    bar.say(_top_line(result.image, result.top), sys.stdout)
                bar.advance(1, 0)
                return result
            if args.workers or args.scheduler:
                with client_for(args.workers or 1, args.scheduler, args.threads) as client:
                    results = run_images(batch.ref, images, args.output_dir, batch.options, args.tile, client,
                                         progress, args.output_format, batch.base)
            else:
                results = run_images(batch.ref, images, args.output_dir, batch.options, args.tile, None, progress,
                                     args.output_format, batch.base)
    return [done.get(result.image, result) for result in results], stale_heatmaps


def _say_what_the_batch_did(batch: _Batch, results: list, replaceable: set[str], stale_heatmaps: list[str]) -> list:
    """After the batch, one note for each thing its images have in common (a line per
    photo would bury the errors said as they came): how the model ran, how the images
    were read, what became of the maps and partial maps there before. The images that
    failed are returned."""
    args, model = batch.args, batch.model
    failed = [r for r in results if r.error]
    if len(failed) < len(results):
        note_run_as_written(args, model)
        note_dense_padding(args, model)
    for result in results:
        if result.note:
            note(f"note: {result.image}: {result.note}")
    _note_batch_conversions([result for result in results if not result.error])
    _note_batch_reading(args, model, [result for result in results if not result.error])
    _note_photos_turned(results)
    _note_npy_maps_replaced(args, results, replaceable)
    _note_tiled_for_memory(args, model, [result for result in results if result.memory_tile])
    _note_resumed([result.resumed for result in results if result.resumed], bool(args.workers or args.scheduler))
    _note_partial_maps_left([result.partial_map for result in results if result.partial_map])
    _note_made_meanwhile(args, [result for result in results if result.made_meanwhile])
    _note_stale_heatmaps_removed(stale_heatmaps)
    _note_maps_of_images_gone(args)
    return failed


def _note_photos_turned(results: list) -> None:
    """One line for the batch's photos turned upright by their EXIF orientation, not one
    per photo: their maps and cells are the upright picture's."""
    turned = sum(result.turned for result in results if not result.error)
    if turned:  # one line for the batch, not one per photo
        theirs = agreeing(turned, "its map and cells are the upright picture's",
                          "their maps and cells are the upright pictures'")
        note(f"note: {counted(turned, 'photo')} turned upright per {agreeing(turned, 'its', 'their')} EXIF "
             f"orientation ({theirs})")


def _rank_kept_maps(args: argparse.Namespace, model, options, kept: list[tuple[str, str]]) -> None:
    """--top with --skip-existing or --resume: the best classes of the maps kept (not made
    again), said as a made map's are and recorded in their rows of the batch's list, as
    this run ranks them (an earlier run's may have had no --top, or another K)."""
    if options.top is None or not kept:
        return
    from graphconv.cluster import ranked_classes
    from graphconv.manifest import Manifest

    manifest = Manifest(args.output_dir)
    for image, output in kept:
        top = ranked_classes(output, options, model.graph.meta.get("labels"))
        print(_top_line(image, top))
        manifest.record_top(output, top, options.top_by)
    manifest.rewrite()


def _top_line(image: str, top) -> str:
    """--top of --images: one image's line on stdout, 'IMAGE: cat 0.81, dog 0.1' (best
    first; graphconv-maps.csv's `top` column holds them too, for scripts)."""
    ranked = ranked_text(top) or "no cell computed"
    return printable(f"{image}: {ranked}")


def _error_line(result, explained: set[str] | None = None) -> str:
    """A failed image's line: its error, led by the image's name unless it names it. A
    map another run wrote meanwhile (two whole batches into one folder: every image) is
    explained once in `explained`'s batch, and said briefly after."""
    from graphconv.cluster import WRITTEN_MEANWHILE

    error = result.error
    if explained is not None and WRITTEN_MEANWHILE in error:
        if WRITTEN_MEANWHILE in explained:
            start = error.index(WRITTEN_MEANWHILE)
            error = f"{error[:start]}{WRITTEN_MEANWHILE}: left as that run wrote it (see above)"
        explained.add(WRITTEN_MEANWHILE)
    named = error.startswith(_as_messages_name(result.image))
    return printable(f"graphconv: {error if named else f'{result.image}: {error}'}")


def _note_tiled_for_memory(args: argparse.Namespace, model, results: list) -> None:
    """One note for the images of a batch mapped in tiles because the whole image's run
    was over the memory budget (`cluster.image_tile`), as a single --image's run says."""
    if not results:
        return
    height, width = max(result.memory_tile for result in results)
    budget = _budget_per_process(args, model)
    over = f"the {format_size(budget)} memory budget" if budget is not None else "their worker's memory budget"
    note(f"note: {counted(len(results), 'image')} would need more than {over} whole: evaluated in exact tiles "
         f"of up to {height}x{width} pixels (--tile sets the size; --memory-limit the budget)")


def _note_maps_elsewhere(args: argparse.Namespace, images: list[str], base: str, manifest: Manifest) -> None:
    """Before the work: the images of this run that --output-dir's list says have a map at
    another place in it, from a run whose pattern started elsewhere (photos/** into out,
    then photos/2023/Italy into out: 2023/Italy/IMG_0001.npy, now IMG_0001.npy too). Each
    map goes below the folder its pattern starts from, so the second run writes copies
    beside the first's and the list has every photo twice; said, with the --output-dir
    that replaces the earlier maps instead."""
    from graphconv.cluster import output_names
    from graphconv.manifest import MANIFEST_NAME

    if not manifest.rows:
        return
    listed = {}
    for key, row in manifest.rows.items():
        if row["status"] == "written" and os.path.isfile(os.path.join(args.output_dir, key)):
            listed.setdefault(row["image"], key)
    elsewhere = []  # (the earlier map's place, this run's), relative to --output-dir
    for image, output in zip(images, output_names(images, args.output_dir, args.output_format, base)):
        new = Path(os.path.relpath(output, args.output_dir)).as_posix()
        old = listed.get(os.path.abspath(image))
        if old is not None and old != new and Path(old).suffix == Path(new).suffix:
            elsewhere.append((old, new))
    if not elsewhere:
        return
    old, new = elsewhere[0]
    prefixes = {o[:-len(n)] if o.endswith("/" + n) else None for o, n in elsewhere}
    instead = ""
    if len(prefixes) == 1 and None not in prefixes:
        folder = shlex.quote(os.path.join(args.output_dir, prefixes.pop().rstrip("/")))
        instead = f"; to replace those instead, give --output-dir {folder}"
    print(f"note: {counted(len(elsewhere), 'image')} of this run {agreeing(len(elsewhere), 'has a map', 'have maps')} "
          f"in {args.output_dir} already at another place ({MANIFEST_NAME} lists {old}; this run writes {new}: a "
          f"map's place below --output-dir follows the folder the --images pattern starts from){instead}",
          file=sys.stderr, flush=True)  # now, not after the batch: a batch of thousands can still be stopped


def _remove_heatmaps_of_earlier_maps(output: str) -> list[str]:
    """The heatmaps graphconv drew beside the map at `output` before this run made the map
    again (older than it: <stem>-heatmap-<class>.png), removed: a picture of the
    earlier map (another --resize, the photo before an edit) beside the new map read as
    the new one's. This run's own heatmap is drawn after this. Their names are returned."""
    from graphconv.images import is_graphconv_heatmap

    map_path = Path(output)
    try:
        made = map_path.stat().st_mtime_ns
        names = os.listdir(map_path.parent)
    except OSError:
        return []
    drawn = re.compile(re.escape(map_path.stem) + r"-heatmap-((?!.*-heatmap-)[\w.-]+)\.png")  # not another map's
    removed = []
    for name in sorted(names):
        path = map_path.parent / name
        if not drawn.fullmatch(name):
            continue
        with contextlib.suppress(OSError):
            if path.stat().st_mtime_ns < made and is_graphconv_heatmap(path):
                path.unlink()
                removed.append(str(path))
    return removed


def _note_stale_heatmaps_removed(removed: list[str]) -> None:
    if removed:
        note(f"note: {counted(len(removed), 'heatmap')} of the maps this run replaced "
             f"{agreeing(len(removed), 'was', 'were')} removed (such as {removed[0]}): drawn from the earlier maps, "
             f"{agreeing(len(removed), 'it', 'they')} no longer showed what the maps hold")


def _note_maps_of_images_gone(args: argparse.Namespace) -> None:
    """After the run: the maps --output-dir's list keeps of images no longer there (deleted
    or moved since they were mapped). Rows of images not in this run are kept, as a run
    over part of a collection must not forget the rest, so such a row read as a photo
    of the collection; said, for the user to clear."""
    from graphconv.manifest import MANIFEST_NAME, Manifest

    gone = [row for key, row in Manifest(args.output_dir).rows.items()
            if row["status"] == "written" and not os.path.lexists(row["image"])
            and os.path.isfile(os.path.join(args.output_dir, key))]
    if gone:
        note(f"note: {counted(len(gone), 'map')} in {args.output_dir} {agreeing(len(gone), 'is', 'are')} of "
             f"{agreeing(len(gone), 'an image', 'images')} no longer there (deleted or moved since; such as "
             f"{gone[0]['map']}, of {gone[0]['image']}): {agreeing(len(gone), 'its row', 'their rows')} in "
             f"{MANIFEST_NAME} and {agreeing(len(gone), 'its map', 'their maps')} are kept")


def _note_made_meanwhile(args: argparse.Namespace, results: list) -> None:
    """One note for the maps another run made while this batch ran (`cluster._made_meanwhile`)."""
    if results:
        note(f"note: {counted(len(results), 'image')} had {agreeing(len(results), 'its', 'their')} map made "
             f"meanwhile by another run into {args.output_dir}, as "
             "this one would have made it (array tasks given overlapping lists?): kept, not made again")


def _note_partial_maps_left(partial_maps: list) -> None:
    """What became of stopped --resume runs' partial maps beside the maps this batch,
    without --resume, wrote (`cluster.PartialMapLeft`): one note for each fate, as a
    single --image's run says of its one."""
    removed = [p for p in partial_maps if p.fate == "removed"]
    in_use = [p for p in partial_maps if p.fate == "in use"]
    another = [p for p in partial_maps if p.fate not in ("removed", "in use")]
    if removed:
        note(f"note: removed {counted(len(removed), 'partial map')} of a stopped --resume run of the same "
             f"{agreeing(len(removed), 'map', 'maps')} (such as {removed[0].shown}, "
             f"{counted(removed[0].tiles, 'tile')} done): this run computed the whole "
             f"{agreeing(len(removed), 'map', 'maps')} without --resume (with --resume a run goes on from them)")
    if in_use:
        note(f"note: {counted(len(in_use), 'partial map')} of a stopped --resume run of the same "
             f"{agreeing(len(in_use), 'map', 'maps')} (such as {in_use[0].shown}) "
             f"{agreeing(len(in_use), 'is left as it is', 'are left as they are')}: another run is writing "
             f"{agreeing(len(in_use), 'it', 'them')} now")
    if another:
        note(f"note: {counted(len(another), 'partial map')} of a stopped --resume run of another job "
             f"{agreeing(len(another), 'is left as it is', 'are left as they are')} (such as {another[0].shown}, "
             f"{counted(another[0].tiles, 'tile')} done: {another[0].fate}): that run's command with --resume "
             "continues it (and replaces its map), or delete it")


def _note_resumed(resumed: list[tuple[int, int]], on_a_cluster: bool) -> None:
    """--images --resume: one note for the maps that went on from an earlier run's tiles
    (on a cluster, also from a task of this run whose worker died: dask ran the image
    again elsewhere, and the note spoke of an earlier run the user never started)."""
    if resumed:
        whose = "an earlier run (or a worker of this run that died)" if on_a_cluster else "an earlier run"
        note(f"note: --resume: {counted(len(resumed), 'map')} went on from the tiles {whose} had done "
             f"({sum(done for done, _ in resumed)} of {sum(total for _, total in resumed)} tiles)")


def _note_batch_conversions(results: list) -> None:
    """One note per kind of conversion in an --images batch (`ImageResult.converted`:
    RGB photos to luma for a grey model, ...), with how many images it concerns, rather
    than a line per photo."""
    kinds = [result.converted for result in results if result.converted]
    for kind in dict.fromkeys(kinds):
        count = kinds.count(kind)
        note(f"note: {count} of {counted(len(results), 'image')} {agreeing(count, 'is', 'are')} {kind}")


def _note_batch_reading(args: argparse.Namespace, model, results: list) -> None:
    """What a single --image's run says of how a raster is read (`cli.note_how_the_raster_is_read`),
    once for the batch: its pixels of more than 8 bits scaled onto 0..255 (with how many
    images), 8-bit images for a spec scaled for deeper values, and --max-nodata or
    --compute-nodata with nothing to act on in any image."""
    if not results:
        return
    kinds = [result.scaled for result in results if result.scaled]
    for kind in dict.fromkeys(kinds):
        note_value_scaling(model.graph.meta.get("preprocess"), kind,
                           whose=f"{kinds.count(kind)} of {len(results)} "
                                 f"images'" if len(results) > 1 else "the image's")
    shallow = sum(result.eight_bit for result in results)
    if shallow:
        note_shallow_pixels(model.graph.meta.get("preprocess"),
                            whose=f"{shallow} of {len(results)} images'" if len(results) > 1 else "the image's")
    if any(result.nodata_possible for result in results):
        return
    if getattr(args, "nodata", None) is not None:
        note(f"note: --nodata {args.nodata:g} has nothing to act on: none of the "
             f"{counted(len(results), 'image')} has pixels "
             "that can hold it (or they are pictures, all of whose pixels are data), so every cell is computed, "
             "any no-data value their files declare put aside by --nodata")
    elif getattr(args, "nodata_options_given", False):
        note(f"note: {nodata_flag(args)} has nothing to act on: none of the {counted(len(results), 'image')} "
             "can hold no-data (none declares a no-data value its pixels can hold, or they are pictures, all of "
             "whose pixels are data): "
             "give the value their no-data pixels hold with --nodata VALUE (--nodata 0 for a swath border of 0)")


def _check_the_network_takes_the_images(args: argparse.Namespace, model, images: list[str], options) -> None:
    """A classifier as written whose fc layer takes its crop alone (an uncompiled spec)
    failed on every image of another size, one line each, all saying to compile it: one
    error instead, exit 2, before any image is read (each size from its header). A
    network that pools over any size (one vector per image) and images of the crop's
    size pass; so does an image too small for some window or smaller than the crop (it
    stopped the whole batch, blaming an fc layer): its own task reports it, the others
    are mapped."""
    from graphconv.cluster import size_as_read

    if args.crops is not None or not model.returns_vectors:
        return
    tried = {tuple(model.crop_shape[1:])}
    for image in images:
        try:
            size = size_as_read(model, image, options)
        except (GraphconvError, OSError, ValueError):
            continue  # an image that cannot be read: its own task says why
        if size not in tried:
            tried.add(size)
            check_the_network_takes(args, model, image, size)


def check_the_network_takes(args: argparse.Namespace, model, image: str, size: tuple[int, int]) -> None:
    """Refuse an input of `size` that a classifier as written cannot take because an fc
    or flatten layer fixes its size, saying how to map it, and for a picture how to
    classify it whole (--resize to the crop). An input too small for a window, or smaller
    than the crop, is left to the run, which says so."""
    from graphconv.errors import ShapeError
    from graphconv.shapes import infer_shapes

    try:
        infer_shapes(model.graph, tuple(size))
    except ShapeError as err:
        height, width = model.crop_shape[1:]
        if not _fixes_input_size(model.graph, err.layer) or size[0] < height or size[1] < width:
            return
        whole = (f"; or classify {'each' if args.images else 'the'} picture resized to the crop: --resize {height} "
                 f"{width}" if args.image or args.images else "")
        raise GraphconvError(f"{model.graph.name} takes only its {height}x{width} crop as written (an fc or flatten "
                             f"layer fixes the input's size), and {image} is {size[0]}x{size[1]}: "
                             f"{ways_to_map(args, model)}{whole}", file=args.model) from None




def _fixes_input_size(graph, name: str | None) -> bool:
    """Whether the layer `name` (a ShapeError's) takes only the size it was built for (an
    fc or a flatten: `OpDef.fixes_input_size`)."""
    try:
        return name is not None and graph.node(name).opdef.fixes_input_size
    except (KeyError, GraphconvError):
        return False


@contextmanager
def _say_how_to_go_on(args: argparse.Namespace, images: list[str], base: str) -> Iterator[None]:
    """A batch stopped (Ctrl-C, SIGTERM) keeps the maps it finished, and with --resume the
    tiles done of those it was computing in tiles: the command's "interrupted" line
    (`cli._what_is_left`, through `args.stopped_batch`) says how many, and how the same
    command goes on; nothing where nothing is kept (it said "0 of 3 maps ... are kept
    in DIR" of a DIR `_output_dir_made` then removed). The maps kept are those written
    since the batch began (their file stamps changed), counted on disk: a worker's map
    finished as the stop came, or one renamed into place just before it, counts too."""
    from graphconv.cluster import output_names
    from graphconv.files import file_stamp

    outputs = output_names(images, args.output_dir, args.output_format, base)
    before = [file_stamp(output) for output in outputs]
    try:
        yield
    except BaseException:
        partial = _partial_maps(args, images, base) if args.resume else []
        finished = sum(1 for output, stamp in zip(outputs, before) if file_stamp(output) not in (None, stamp))
        if not (finished or partial):
            raise
        kept = (f"{finished} of {counted(len(images), 'map')} {agreeing(finished, 'was', 'were')} finished and "
                f"{agreeing(finished, 'is', 'are')} kept in {args.output_dir}")
        if partial:
            args.stopped_batch = (f"{kept}, and the tiles done of {len(partial)} more in {partial[0]}"
                                  f"{' and others' if len(partial) > 1 else ''}; the same command goes on from them")
        else:
            again = "the same command" if args.skip_existing or args.resume else \
                "the same command with --skip-existing"
            args.stopped_batch = f"what it was writing is removed; {kept}; {again} continues the batch"
        raise


def _partial_maps(args: argparse.Namespace, images: list[str], base: str) -> list[str]:
    """The partial maps (`tiling.PartialMap`) of this batch's images in --output-dir that
    hold a tile done, as shown to the user (one stopped before its first tile keeps
    nothing to go on from: "the tiles done of 2 more" was said of none)."""
    from graphconv.cluster import output_names
    from graphconv.tiling import PartialMap

    maps = [PartialMap(output) for output in output_names(images, args.output_dir, args.output_format, base)]
    return [partial.shown for partial in maps if partial.exists() and partial.count_done()]


@contextmanager
def _output_dir_made(folder: str, images: list[str]) -> Iterator[None]:
    """Make --output-dir (and the folders above it) for the run; removed again, where
    empty, when the run is stopped (Ctrl-C, SIGTERM: a killed run left the empty folder
    it had made) or fails as a whole. A batch whose every image failed on its own keeps
    the folder and its list, which says why each failed."""
    created = [p for p in (Path(folder), *Path(folder).parents) if not p.exists()]
    Path(folder).mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        _remove_if_empty(created, images)
        raise


def _remove_if_empty(created: list[Path], images: list[str]) -> None:
    """Remove the folders a run made (innermost first) that hold nothing, or only empty
    folders (the subfolders mirroring the images'), as a failed command leaves nothing;
    nor the list of maps (`manifest`) of none, which the run wrote there, unless it lists
    another batch's images too: a job array's task stopped before its first map took
    the folder, and the rows of the task beside it, with it."""
    from graphconv.manifest import LABELS_NAME, MANIFEST_NAME, Manifest

    mine = {os.path.abspath(image) for image in images}
    for folder in created:
        if not folder.is_dir():
            continue
        files = {name for _, _, names in os.walk(folder) for name in names}
        listed = folder / MANIFEST_NAME
        if (MANIFEST_NAME in files <= {MANIFEST_NAME, LABELS_NAME} and listed.is_file()
                and all(row["image"] in mine for row in Manifest(folder).rows.values())):
            for name in files:
                (folder / name).unlink()
        for inner, _, _ in sorted(os.walk(folder), key=lambda entry: -len(entry[0])):
            with contextlib.suppress(OSError):  # not empty: kept
                os.rmdir(inner)


def _as_messages_name(image: str) -> tuple[str, ...]:
    """The ways an error about `image` may begin: its path as given, or as
    `errors.shown_path` shows the absolute path, each as `errors.printable` prints it."""
    from graphconv.errors import shown_path
    return printable(f"{image}:"), printable(f"{shown_path(os.path.abspath(image))}:")  # as messages print them


def _image_paths(pattern: str) -> list[str]:
    """--images: a glob ('photos/*.jpg'; 'slides/**/*.svs' reaches into subfolders), or a
    folder, standing for every picture, TIFF and zarr image in it. Left out, with one
    note saying how many and why: files of other formats, hidden files (macOS's
    ._photo.jpg), and the maps and heatmaps graphconv wrote (a rerun into the photos'
    folder read its own .tif maps; a 'dir/*' matches an earlier run's .npy maps too)."""
    from graphconv.cluster import leaving_out

    lists: dict = {}  # each folder's list of maps, read once
    if _is_a_list(pattern):
        found = _listed_images(pattern[len(LIST_PREFIX):])
        reasons = {p: leaving_out(p, lists) for p in found}
        _note_left_out(pattern, {p: reason for p, reason in reasons.items() if reason})
        return [p for p, reason in reasons.items() if reason is None]  # in the list's order
    folder = Path(pattern)
    if folder.is_dir() and folder.suffix.lower() != ".zarr":
        found = [str(p) for p in folder.iterdir()]
        _note_subfolders_not_searched(pattern, [Path(p) for p in found if Path(p).is_dir()])
    elif os.path.exists(pattern):  # the file named, taken literally: 'img[1].jpg' is no glob class here
        return [pattern]
    else:
        found = glob.glob(pattern, recursive=True)
    found = [p for p in found if not Path(p).is_dir() or is_zarr_path(p)]
    reasons = {p: leaving_out(p, lists) for p in found}
    _note_left_out(pattern, {p: reason for p, reason in reasons.items() if reason})
    return sorted(p for p, reason in reasons.items() if reason is None)


def _refuse_scales_of_rasters_only(pattern: str, images: list[str]) -> None:
    """--scales over a batch of TIFF or zarr images only: one error before any work,
    where each image failed in turn with the same one (a batch that mixes pictures and
    TIFF scans maps the pictures, and says so of each of the others)."""
    from graphconv.cluster import SCALES_NOT_IN_TILES
    from graphconv.sources import is_ome_zarr, is_tiff

    def read_in_tiles(image: str) -> bool:
        return is_tiff(image) or is_ome_zarr(image) or os.path.isdir(image)  # a folder here is a zarr store
    if all(read_in_tiles(image) for image in images):
        every = "its image is" if len(images) == 1 else f"all {len(images)} of its images are"
        raise GraphconvError(f"--images {pattern}: {every} TIFF or zarr: {SCALES_NOT_IN_TILES}")


LIST_PREFIX = "@"


def _is_a_list(pattern: str) -> bool:
    """--images @FILE: FILE lists the images (a file named '@x.jpg' is that image)."""
    return pattern.startswith(LIST_PREFIX) and not os.path.exists(pattern)


def _list_lines(list_file: str) -> list[str]:
    """The lines of a list of --images, from a regular file of text only: /dev/zero grew
    to 6 GB in 15 s, a FIFO waited for ever, and an .npz given by mistake (`@weights.npz`)
    was read as missing paths of binary bytes."""
    from graphconv.arrays import file_kind, open_regular_file

    what = "this list of --images"
    try:
        with open_regular_file(list_file, what, not_found=f"cannot read {what}: it is not there") as fp:
            data = fp.read()
    except OSError as err:
        raise GraphconvError(f"cannot read {what}: {err.strerror or err}", file=list_file) from None
    kind = file_kind(data[:16]) or ("binary data" if b"\0" in data else None)
    if kind:
        raise GraphconvError(f"is {kind}, not a list of images (UTF-8 text, one path a line)", file=list_file)
    lines = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="surrogateescape")  # as open() splits them
    return [line.rstrip("\r\n") for line in lines]


def _listed_images(list_file: str) -> list[str]:
    """The images a list names, one path a line (`find slides -name '*.svs' > slides.txt`),
    a relative one from the current folder, as the shell that made the list took it;
    blank lines and '#' comments are skipped, a path listed again is mapped once. A list
    none of whose paths is there (run from another folder, a typo'd prefix) is refused
    before any work, naming the first's line. Some missing among others are noted before
    any work, naming their lines, and each is that image's error, recorded in the batch's
    list as a file deleted during the run is: one slide lost from a 300-slide list
    refused the whole night's batch. A broken link is there, named as the list names it:
    it is that image's error, as in a folder's batch."""
    listed = list(enumerate(_list_lines(list_file), 1))
    images, missing = {}, []
    for number, path in listed:
        path = path if os.path.lexists(path) else path.strip()  # spaces an editor left after the name
        if not path or path.startswith("#"):
            continue
        if not os.path.lexists(path) or os.path.isdir(path) and not is_zarr_path(path):
            missing.append((number, path))
        images.setdefault(os.path.abspath(path), path)  # ./a.jpg and a.jpg are one image
    if missing:
        (number, path), more = missing[0], len(missing) - 1
        what = "is a folder, not an image" if os.path.isdir(path) else "is not there"
        where = f"relative paths are read from the current folder, {os.getcwd()}"
        if len(missing) == len(images):
            also = f" (nor is any other listed path: {more} more)" if more else ""
            raise GraphconvError(f"{shown(path)} {what}{also}; {where}", loc=Location(list_file, number))
        from graphconv.manifest import MANIFEST_NAME

        lines = ", ".join(str(n) for n, _ in missing[1:4]) + (", ..." if len(missing) > 4 else "")
        also = f" (and {more} more listed {agreeing(more, 'path', 'paths')}: {agreeing(more, 'line', 'lines')} " \
               f"{lines})" if more else ""
        note(f"note: {list_file}:{number}: {shown(path)} {what}{also}; the other images are mapped, and a missing "
             f"image's row in {MANIFEST_NAME} records its error ({where})")
    return list(images.values())


def _list_base(images: list[str]) -> str:
    """The folder the maps of a listed batch mirror below --output-dir: the listed
    images' nearest common folder (photos of 2023/01 and 2024/01 keep them apart), of the
    whole list, so every --shard of it places each map alike."""
    return os.path.commonpath([os.path.dirname(os.path.abspath(image)) for image in images])


def _shard_of(images: list[str], part: int, parts: int) -> list[str]:
    """--shard K/N: every Nth image from the Kth, so the N parts are the whole batch, and
    the sizes of a sorted batch's images spread evenly over them."""
    mine = images[part::parts]
    note(f"note: --shard {part}/{parts}: {len(mine)} of the batch's {counted(len(images), 'image')}")
    return mine


def _note_subfolders_not_searched(pattern: str, subfolders: list[Path]) -> None:
    """A folder given to --images is searched itself, not its subfolders: where some hold
    images, say how many, and the pattern that maps them too (they were left out without
    a word)."""
    from graphconv.cluster import is_image_to_map

    holding = [folder for folder in subfolders if folder.suffix.lower() != ".zarr" and not folder.name.startswith(".")
               and any(is_image_to_map(Path(inner) / name) for inner, _, names in os.walk(folder) for name in names)]
    if holding:
        below = os.path.join(glob.escape(pattern.rstrip("/")), "**", "*")  # 'Wed [2023]' is a folder, not a class
        note(f"note: --images {pattern}: {counted(len(holding), 'subfolder')} with images in "
             f"{agreeing(len(holding), 'it', 'them')} "
             f"{agreeing(len(holding), 'was', 'were')} not searched (a folder "
             f"is searched itself only); --images '{below}' maps them too")


def _no_images(pattern: str) -> None:
    """The error for an --images pattern that yields no image, saying which images count."""
    from graphconv.cluster import image_suffixes

    kinds = ", ".join(image_suffixes())
    if _is_a_list(pattern):
        raise GraphconvError(f"lists no image graphconv reads ({kinds})", file=pattern[len(LIST_PREFIX):])
    if Path(pattern).is_dir():
        from graphconv.cluster import leaving_out
        below = [p for p in Path(pattern).rglob("*") if not p.is_dir() and leaving_out(str(p)) is None]
        if below:
            suffixes = {p.suffix for p in below}  # one kind: say it; '**/*.jpg' of a camera's .JPG and .jpg missed most
            names = f"*{glob.escape(below[0].suffix)}" if len(suffixes) == 1 else "*"
            pattern_below = os.path.join(glob.escape(pattern.rstrip("/")), "**", names)
            raise GraphconvError(f"holds no image graphconv reads ({kinds}) itself; "
                                 f"{counted(len(below), 'image')} {agreeing(len(below), 'is', 'are')} in "
                                 f"its subfolders, which a folder does not take in: give --images '{pattern_below}' "
                                 "(quoted; ** reaches into every subfolder)", file=pattern)
        raise GraphconvError(f"holds no image graphconv reads ({kinds})", file=pattern)
    if glob.glob(pattern, recursive=True):
        raise GraphconvError(f"--images {pattern!r} matches no image graphconv reads ({kinds})")
    raise GraphconvError(f"--images {pattern!r} matches no file{_brackets_hint(pattern)}")


def _brackets_hint(pattern: str) -> str:
    """Where a pattern holds [ or ] and its folder exists as written ('Wedding [2023]/*.jpg'),
    say that [...] is a wildcard (one character of those inside), so the folder's own name
    did not match, and how to pass it."""
    folder = os.path.dirname(pattern)
    if not ("[" in folder or "]" in folder) or not os.path.isdir(folder):
        return ""
    escaped = os.path.join(glob.escape(folder), os.path.basename(pattern))
    return (f": [...] in a pattern is a wildcard (one character of those inside), so the folder {folder!r} does "
            f"not match itself; give the folder, --images {folder!r}, or escape the brackets: --images {escaped!r}")


def _check_output_dir(folder: str) -> None:
    """Refuse, before any work, an --output-dir that is a file or lies below one (was a
    bare "afile: File exists")."""
    path = Path(folder)
    for above in (path, *path.parents):
        if above.exists():
            if above == path and not above.is_dir():
                raise GraphconvError("is a file, not a folder: --output-dir names the folder the maps go into "
                                     "(give another name)", file=folder)
            if not above.is_dir():
                raise GraphconvError(f"cannot make --output-dir below {above}, which is a file", file=folder)
            return


def _note_left_out(pattern: str, reasons: dict[str, str]) -> None:
    """One line saying how many files --images left out, and why; for those of formats
    graphconv does not read, which (`.heic x5, .nef x2`): a camera's raw or HEIC photos
    left out should not pass for text files."""
    from graphconv.cluster import NOT_AN_IMAGE_FORMAT

    if not reasons:
        return
    why = []
    given = list(reasons.values())
    for reason in sorted(set(given), key=lambda one: (-given.count(one), one)):  # the commonest first
        paths = [path for path, why_left in reasons.items() if why_left == reason]
        why.append(f"{len(paths)} {reason}{_suffix_counts(paths) if reason == NOT_AN_IMAGE_FORMAT else ''}")
    note(f"note: --images {pattern}: left out {counted(len(reasons), 'file')}: {', '.join(why)}")


def _suffix_counts(paths: list[str]) -> str:
    """` (.heic x5, .nef x2)`: the names' suffixes, the commonest first."""
    suffixes = [Path(path).suffix.lower() or "no suffix" for path in paths]
    counts = sorted({suffix: suffixes.count(suffix) for suffix in suffixes}.items(), key=lambda item: -item[1])
    return " (" + ", ".join(f"{suffix} x{count}" for suffix, count in counts) + ")"


GLOB_MAGIC = re.compile(r"[*?[]")
GLOB_ESCAPED = re.compile(r"\[([*?[])\]")  # a wildcard character escaped as glob.escape does: [*], [?], [[]


def pattern_base(pattern: str) -> str:
    """The folder an --images pattern starts from, which the maps' folders mirror below
    --output-dir: the folder given, an existing file's folder, or a glob's folders before
    its first wildcard ('lib/**/*.JPG' -> lib, '*.jpg' -> .; an escaped one, 'Wed [[]2023]', is
    none)."""
    if Path(pattern).is_dir():
        return pattern
    if os.path.exists(pattern) or not GLOB_MAGIC.search(pattern):
        return os.path.dirname(pattern) or "."
    fixed = []
    for part in Path(pattern).parts[:-1]:
        if GLOB_MAGIC.search(GLOB_ESCAPED.sub("", part)):
            break
        fixed.append(GLOB_ESCAPED.sub(r"\1", part))  # 'Wed [[]2023]' (glob.escape's) is the folder 'Wed [2023]'
    return str(Path(*fixed)) if fixed else "."


def _images_not_failed_alike(batch: _Batch, images: list[str]) -> list[str]:
    """--skip-failed: the images but those whose map failed in an earlier run with this
    run's settings, their file unchanged since (`Manifest.failed_alike`): a broken photo
    made every nightly rerun exit 2. Those left out are said, with one's error."""
    from graphconv.cluster import IMAGE_STAMP, image_stamp, map_settings, output_names
    from graphconv.manifest import MANIFEST_NAME, Manifest

    args = batch.args
    manifest = Manifest(args.output_dir)
    outputs = output_names(images, args.output_dir, args.output_format, batch.base)
    errors = {image: manifest.failed_alike(output, {**map_settings(batch.ref, image, batch.options),
                                                    IMAGE_STAMP: image_stamp(image)})
              for image, output in zip(images, outputs)}
    failed = [image for image in images if errors[image] is not None]
    if failed:
        note(f"note: {counted(len(failed), 'image')} failed in an earlier run with these settings and "
             f"{agreeing(len(failed), 'is', 'are')} unchanged since: left out (--skip-failed; "
             f"{agreeing(len(failed), 'its', 'their')} {MANIFEST_NAME} rows keep the error, such as "
             f"{printable(failed[0])}: {errors[failed[0]]})")
    return [image for image in images if errors[image] is None]


def _images_not_done(args: argparse.Namespace, ref, model, images: list[str], base: str,
                     options) -> tuple[list[str], list[tuple[str, str]]]:
    """--skip-existing: the images whose map as this run makes it (`cluster.holds_its_map`)
    is not in --output-dir yet; and (image, map) of the rest (whose --heatmap may still be
    missing: `_heatmaps_drawn_from_kept_maps`)."""
    from graphconv.cluster import holds_its_map, output_names
    from graphconv.manifest import MANIFEST_NAME, Manifest

    outputs = output_names(images, args.output_dir, args.output_format, base)
    manifest = Manifest(args.output_dir)
    made_with = manifest.made_with
    todo, kept = [], []
    for image, output in zip(images, outputs):
        done = holds_its_map(ref, model, image, output, options, args.tile, made_with)
        (kept if done else todo).append((image, output))
    unrecorded = [output for _, output in todo if output.endswith(".npy") and os.path.isfile(output)
                  and made_with(output) is None]
    changed = [output for output in unrecorded if manifest.lists(output) and manifest.image_of(output) is None]
    unlisted = [output for output in unrecorded if output not in changed]  # or listed by an older graphconv
    if unlisted:
        note(f"note: {counted(len(unlisted), '.npy map')} in {args.output_dir} (such as {unlisted[0]}) "
             f"{agreeing(len(unlisted), 'has', 'have')} no row in its "
             f"{MANIFEST_NAME} saying what made them (an older graphconv's, or a run killed before listing them): "
             "made again, as a map of other weights would not be told from this run's")
    if changed:
        note(f"note: {counted(len(changed), '.npy map')} in {args.output_dir} (such as {changed[0]}) "
             f"{agreeing(len(changed), 'is', 'are')} not as {MANIFEST_NAME} recorded "
             f"{agreeing(len(changed), 'it', 'them')} (another size or modification time: changed since, or "
             "copied without their times; cp -a and rsync -a keep them): made again")
    _record_moved_images(manifest, kept)
    todo = [image for image, _ in todo]
    if len(todo) < len(images):
        done = len(images) - len(todo)
        note(f"note: {done} of {counted(len(images), 'image')} {agreeing(done, 'has its', 'have their')} map in "
             f"{args.output_dir} already: left out ({'--skip-existing' if args.skip_existing else '--resume'})")
    return todo, kept


def _record_moved_images(manifest, kept: list[tuple[str, str]]) -> None:
    """The rows of kept maps whose image is now elsewhere (`Manifest.record_moved`),
    rewritten to name where it is, and said."""
    moved = [output for image, output in kept if manifest.record_moved(image, output)]
    if moved:
        manifest.rewrite()
        note(f"note: {counted(len(moved), 'map')} kept (such as {moved[0]}) {agreeing(len(moved), 'was', 'were')} "
             f"listed under a path {agreeing(len(moved), 'its image is', 'their images are')} no longer at: the "
             "list now names where they are")


def _heatmaps_drawn_from_kept_maps(args: argparse.Namespace, model, grid, kept: list[tuple[str, str]]) -> list[str]:
    """--skip-existing --heatmap: the heatmap of each map kept that has none, or one older
    than its map, drawn from the map. A heatmap was counted done by its name alone, so
    after a photo was edited and its map made again without --heatmap, the old picture's
    heatmap stayed, taken as done; and a batch stopped with maps whose heatmaps were not
    drawn yet made those maps again. The images whose heatmap could not be drawn so are
    returned, to be mapped again (and their error said then, if it comes again)."""
    if args.heatmap is None:
        return []
    from graphconv.cluster import ImageResult

    undrawn = [(image, output) for image, output in kept if not _heatmap_is_current(args, output)]
    redo = [image for image, output in undrawn
            if _with_heatmap(args, model, grid, ImageResult(image, output)).error]
    if len(undrawn) > len(redo):
        drawn = len(undrawn) - len(redo)
        note(f"note: {counted(drawn, 'heatmap')} drawn from {agreeing(drawn, 'its map', 'their maps')} in "
             f"{args.output_dir} (none there, older than the map, or drawn with other --heatmap-range, "
             "--heatmap-opacity or --heatmap-bands)")
    return redo


def _heatmap_is_current(args: argparse.Namespace, output: str) -> bool:
    """Whether the map's --heatmap is there, no older than the map (drawn after it), and
    drawn as this run would draw it (one with no settings kept, an older graphconv's, as
    the defaults draw)."""
    from graphconv.images import drawn_with

    heatmap = _heatmap_name(args, output)
    try:
        if heatmap.stat().st_mtime_ns < os.stat(output).st_mtime_ns:
            return False
    except OSError:
        return False
    defaults = argparse.Namespace(heatmap_range="auto", heatmap_opacity=None, heatmap_bands=None)
    return (drawn_with(heatmap) or heatmap_settings(defaults)) == heatmap_settings(args)


def _npy_maps_there(args: argparse.Namespace, images: list[str], base: str, manifest: Manifest) -> set[str]:
    """The .npy maps already in --output-dir that this run would replace (said after it,
    of the images that then got their map: `_note_npy_maps_replaced`)."""
    from graphconv.cluster import output_names

    if args.output_format != "npy":
        return set()
    listed = manifest.wrote  # graphconv-maps.csv records their images: no other image's, unsaid
    return {output for output in output_names(images, args.output_dir, "npy", base)
            if os.path.isfile(output) and not listed(output)}


def _note_npy_maps_replaced(args: argparse.Namespace, results: list, there: set[str]) -> None:
    """Say how many .npy maps that were in --output-dir this run replaced (counted from the
    images that got their map: one whose image then failed was kept, yet counted): an
    .npy records not which image it was made from, so another image's of the same name
    (cameras reuse IMG_0001.JPG) cannot be told from this one's and is replaced too, where
    a .tif map of another image is refused (`cluster.map_of_another_image`)."""
    replaced = sum(1 for result in results if result.output is not None and result.output in there)  # map written
    if replaced:
        note(f"note: {counted(replaced, '.npy map')} in {args.output_dir} {agreeing(replaced, 'was', 'were')} "
             f"there and {agreeing(replaced, 'is', 'are')} replaced; an .npy does not record "
             "which image it was made from, so one of another image of the same name would be replaced too "
             "(--output-format tif maps record their image, and another image's is refused)")


def _heatmap_name(args: argparse.Namespace, output: str) -> Path:
    output = Path(output)
    return output.with_name(f"{output.stem}-heatmap-{heatmap_tag(args)}.png")


def _check_heatmap_names(args: argparse.Namespace, images: list[str], base: str) -> None:
    """Before any work: no image's heatmap may replace an image, or a picture there that
    graphconv did not draw (an earlier run's heatmap may be replaced)."""
    from graphconv.cluster import output_names
    from graphconv.images import is_graphconv_heatmap

    if args.heatmap is None:
        return
    inputs = {Path(image).resolve() for image in images}
    for output in output_names(images, args.output_dir, args.output_format, base):
        path = _heatmap_name(args, output)
        if path.resolve() in inputs or (path.exists() and not is_graphconv_heatmap(path)):
            raise GraphconvError("is already there and is not a heatmap graphconv drew: give another --output-dir",
                                 file=str(path))


def _with_heatmap(args: argparse.Namespace, model, grid, result):
    """--heatmap of --images: one image's map, read back from its file, drawn over the
    image beside it (<name>-heatmap-<class>.png); a failure is that image's error."""
    from graphconv.cluster import read_map

    if args.heatmap is None or result.error:
        return result
    one = argparse.Namespace(**vars(args))
    one.heatmap_out = str(_heatmap_name(args, result.output))
    try:
        source = _map_options(args, grid).open_image(model, result.image, getattr(args, "nodata", None))
        _draw_heatmap(one, model, source, grid, read_map(result.output), None)
    except (GraphconvError, OSError, ValueError) as err:
        return replace(result, error=f"its map was written, its heatmap not: {user_message(err)}")
    return result


LOG_EVERY = 60.0  # seconds between two progress lines in a log (stderr not a terminal)


class _progress:
    """Progress on stderr: a tqdm bar (tiles or images done, pixels per second, time left)
    on a terminal; where stderr is a file (a batch job's log, nohup), a plain line every
    LOG_EVERY seconds, "progress: 12 of 64 tiles (19%), 3.83 Mpx/s, 0:42 so far, about
    2:58 left": there a bar's carriage returns pile up on one line, and a SLURM job's
    log said nothing for hours. Nothing with --quiet; no bar without tqdm."""

    def __init__(self, args, total: int, unit: str, pixels: int | None):
        self.bar = None
        self.logged = False
        self.done, self.total, self.unit, self.pixels = 0, total, unit, 0
        self.start = self.last_line = time.perf_counter()
        self.show_rate = pixels is not None
        if getattr(args, "quiet", False):
            return
        if not sys.stderr.isatty():
            self.logged = True
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=total, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)

    def _rate(self) -> str:
        rate = self.pixels / max(time.perf_counter() - self.start, 1e-9) / 1e6
        return f"{rate:.2f} Mpx/s"

    def _log_line(self) -> None:
        now = time.perf_counter()
        if now - self.last_line < LOG_EVERY or self.done >= self.total:
            return
        self.last_line = now
        spent = now - self.start
        left = spent * (self.total - self.done) / self.done if self.done else None
        parts = [f"progress: {self.done} of {self.total} {self.unit} ({self.done / max(self.total, 1):.0%})",
                 *([self._rate()] if self.show_rate else []), f"{_clock(spent)} so far",
                 *([f"about {_clock(left)} left"] if left is not None else [])]
        print(", ".join(parts), file=sys.stderr, flush=True)

    def __enter__(self):
        return self

    def advance(self, count: int, pixels: int) -> None:
        self.done += count
        self.pixels += pixels
        if self.logged:
            self._log_line()
        if self.bar is None:
            return
        if self.show_rate:
            self.bar.set_postfix_str(self._rate(), refresh=False)
        self.bar.update(count)

    def say(self, line: str, file=None) -> None:
        """A line on stderr (or `file`) now, above the bar (tqdm.write keeps the bar whole)."""
        file = file or sys.stderr
        if self.bar is None:
            print(line, file=file, flush=True)
        else:
            self.bar.write(line, file=file)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False


def _clock(seconds: float) -> str:
    """1:02:03 or 2:03: elapsed and remaining times in a progress line."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
