"""The `graphconv` command: run, compile, inspect, verify, import, export, passes.

User errors print one line, `graphconv: file:line: layer 'x': ...`, and exit with
status 2; nothing is written unless the command succeeds (graphconv/files.py). Besides
GraphconvError, what bad input makes the OS or Python raise (a file that cannot be
read or written, memory that runs out) is reported the same way. `--traceback` shows
the Python traceback above that line (useful when debugging a plugin), the status still
2; any other exception is a bug in graphconv and keeps its traceback.
"""
from __future__ import annotations

import argparse
import glob
import math
import os
import re
import shlex
import signal
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from typing import Sequence

import numpy as np

from graphconv.arrays import load_npy
from graphconv.background import DEFAULT_MAX_NODATA, DEFAULT_THRESHOLD
from graphconv.backends import AUTO, get_backend
from graphconv.classes import class_index, class_scores, print_top, rejoined_names, top_basis
from graphconv.errors import (GraphconvError, GraphconvWarning, agreeing, counted, printable, shown, shown_path,
                              user_message)
from graphconv.files import (atomic_write, check_model_target, check_writable, committed_outputs, forget_committed,
                             spare_the_model)
from graphconv.georef import is_tiff_output, is_zarr_path
from graphconv.images import PICTURE_SUFFIXES, RESIZE_HINT, SMALLER_THAN_A_CROP_HINT
from graphconv.memory import check_run_fits
from graphconv.pass_manager import DEFAULT_PIPELINE
from graphconv.against_onnxruntime import AGAINST
from graphconv.profiling import format_profile, median_profile
from graphconv.frontends import OUTPUT_ACTIVATIONS
from graphconv.frontends.yaml import PIXEL_VALUES, TASKS
from graphconv.sources import PAD_MODES, shifted_cells
from graphconv.strides import METHODS as STRIDE_METHODS

EXIT_USER_ERROR = 2
EXIT_BROKEN_PIPE = 128 + 13  # what a Unix tool killed by SIGPIPE returns


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command (`argv`, default sys.argv[1:]) in this process and return its exit
    status; the signal handlers it installs are put back when it returns."""
    return _main(argv, console=False)


def console_main() -> int:
    """The `graphconv` command (graphconv.console, `python -m graphconv`): as `main`,
    except that once the command has stopped, a later Ctrl-C or SIGTERM ends the process
    at once with the command's status: it cannot add a traceback to the line that said
    how the command ended, nor wait on an exit that hangs."""
    return _main(None, console=True)


def _main(argv: Sequence[str] | None, console: bool) -> int:
    with _stop_on_signals(console) as status:
        status.append(_parse_and_run(argv))
    return status[0]


def _parse_and_run(argv: Sequence[str] | None) -> int:
    from graphconv.process import configure_process

    try:
        configure_process()
        parser = build_parser()
        args = _parse(parser, argv)
    except KeyboardInterrupt:
        print("graphconv: interrupted (nothing was written)", file=sys.stderr)
        return 130
    except Terminated:
        print("graphconv: terminated (nothing was written)", file=sys.stderr)
        return 128 + signal.SIGTERM
    return _run_command(args)


def _run_command(args: argparse.Namespace) -> int:
    try:
        from graphconv.memory import memory_limit_set, parse_size
        from graphconv.threads import threads_set
        limit = None if args.memory_limit is None else parse_size(args.memory_limit)  # errors name the flag
        with memory_limit_set(limit), threads_set(_threads_here(args)), warnings.catch_warnings():
            warnings.simplefilter("ignore", GraphconvWarning)  # said as notes (note_what_the_network_is)
            status = _handle(args)
            sys.stdout.flush()  # here a full disk under `> report.txt` is an error that names standard output
            return after_lost_output(status)
    except BrokenPipeError:  # `graphconv inspect ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (GraphconvError, OSError, MemoryError, RecursionError, UnicodeError) as err:
        if args.traceback:  # the error's traceback, and the status a script tests for either way
            import traceback
            traceback.print_exc()
        kept = _partial_map_kept(args) if getattr(args, "partial_map_open", False) else None  # not a refusal of it
        print(f"graphconv: {printable(user_message(err, args.traceback))}{f' ({kept})' if kept else ''}",
              file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(printable(f"graphconv: interrupted ({_what_is_left(args)})"), file=sys.stderr)
        _quiet_shutdown()
        return 130
    except Terminated:
        print(printable(f"graphconv: terminated ({_what_is_left(args)})"), file=sys.stderr)
        _quiet_shutdown()
        return 128 + signal.SIGTERM


def _threads_here(args: argparse.Namespace) -> int | None:
    """--threads for the CPU kernels this process runs; None where it chose none, or where
    the kernels run in --workers' processes (each worker gets that many: `client_for`)."""
    threads = getattr(args, "threads", None)
    if threads is None:
        return None
    if getattr(args, "scheduler", None):
        raise GraphconvError("--threads sets the threads of the CPU kernels graphconv starts; a running cluster's "
                             "workers keep their own (start them with NUMBA_NUM_THREADS=N)")
    if args.device == "cuda":
        raise GraphconvError("--threads sets the threads of the CPU kernels; --device cuda runs them on the GPU")
    return None if getattr(args, "workers", None) else threads


def after_lost_output(status: int) -> int:
    """The command's status where standard output failed while it ran (the `graphconv`
    command keeps going, `console._StandardOutput`): a command that wrote its outputs
    succeeded, and a note says what was lost; one whose product was what it printed
    failed (exit 2, or 141 for a reader that left: `inspect ... | head`)."""
    from graphconv.console import standard_output_lost

    lost = standard_output_lost()
    if lost is None or status != 0:
        return status
    written = committed_outputs()
    if written:
        print(printable(f"graphconv: note: standard output could not be written ({lost.strerror}), so what the "
                        f"command printed is lost; its outputs are written, complete: {', '.join(written)}"),
              file=sys.stderr)
        return status
    if isinstance(lost, BrokenPipeError):
        return EXIT_BROKEN_PIPE
    raise lost


def _quiet_shutdown() -> None:
    """A stop can leave zarr's asyncio reads pending: at exit asyncio logged "Task was
    destroyed but it is pending!" with the task, and Python warned of a coroutine never
    awaited, below the one line the stop printed. Nothing is lost by them: silenced at
    the interpreter's exit (`_silence_asyncio`), so that a program calling `main` keeps
    asyncio's logging until then. And a stop while numba compiled a kernel (a cold
    cache's first run) left LLVM objects half-built, whose `__del__` printed "Exception
    ignored in: <function ObjectRef.__del__>" and a traceback below that line: such
    reports from llvmlite are dropped from the stop on (`_without_llvm_teardown`)."""
    import atexit
    if getattr(sys.unraisablehook, "without_llvm_teardown", False):  # a program that stopped before
        return
    atexit.register(_silence_asyncio)
    sys.unraisablehook = _without_llvm_teardown(sys.unraisablehook)


def _without_llvm_teardown(previous):
    """`previous` (a `sys.unraisablehook`), silent about what llvmlite's objects raise as
    they are freed."""
    def hook(unraisable) -> None:
        if str(getattr(unraisable.object, "__module__", "") or "").startswith("llvmlite"):
            return
        previous(unraisable)
    hook.without_llvm_teardown = True
    return hook


def _silence_asyncio() -> None:
    import logging
    logging.getLogger("asyncio").setLevel(logging.CRITICAL + 1)
    warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)


def _handle(args: argparse.Namespace) -> int:
    """The command itself, its plugins loaded first (they may register devices: --device
    is checked after them) and its notes printed after."""
    for plugin in getattr(args, "plugin", None) or ():
        from graphconv.pass_manager import load_plugin
        load_plugin(plugin)
    if getattr(args, "device", AUTO) != AUTO:
        get_backend(args.device)  # "unknown device 'x' (choose from cpu, cuda, auto)", before any work
    _NOTES.clear()
    forget_committed()
    code = args.handler(args)
    note_broken_plugins()
    for text in _NOTES:  # after the work, so that a failed command prints its one error line only
        print(printable(text), file=sys.stderr)
    return code


def note_broken_plugins() -> None:
    """An installed plugin that failed to import is said after every command that loaded
    the passes: its passes are missing, but graphconv's own still work."""
    pass_manager = sys.modules.get("graphconv.pass_manager")
    if pass_manager is not None and pass_manager._builtins_loaded:
        for why in pass_manager.broken_entry_points():
            note(f"note: {why}")


def _what_is_left(args: argparse.Namespace) -> str:
    """What a stopped command leaves: nothing, or with run --resume the partial map."""
    kept = _partial_map_kept(args)
    if kept:
        return kept
    if getattr(args, "stopped_batch", None):  # an --images batch: its finished maps are kept (tiled_cli)
        return args.stopped_batch
    written = committed_outputs()  # complete before the signal came (or held back until they were)
    if written:
        return f"it had written {', '.join(written)}, complete; nothing else is left"
    return "what it was writing is removed"


def _partial_map_kept(args: argparse.Namespace) -> str | None:
    """With run --resume, where its partial map is: what a stopped or failed run leaves (a
    disk that filled mid-run said only "No space left on device")."""
    if not (getattr(args, "resume", False) and getattr(args, "output", None)):
        return None
    from graphconv.tiling import PartialMap
    partial = PartialMap(args.output)
    if os.path.isdir(partial.folder) and os.path.lexists(partial.map_path):  # not renamed into place yet
        return f"the tiles done are kept in {partial.shown}: the same command with --resume continues it"
    return None


class Terminated(BaseException):
    """SIGTERM (a job scheduler's kill, `timeout`), raised in the main thread as Ctrl-C's
    KeyboardInterrupt is, so every `with` block on the way out removes what it was
    writing: a killed tiled run leaves no partial map the size of the whole one."""


@contextmanager
def _stop_on_signals(console: bool = False):
    """Ctrl-C raises KeyboardInterrupt and SIGTERM Terminated, in the main thread, as
    the command's first signal; any later one is ignored. The first stops the command,
    and every `with` block on the way out removes what it was writing; a second (Ctrl-C
    pressed twice, a scheduler's SIGTERM after it) cutting that cleanup short would
    leave half a temporary behind, or a traceback instead of the one 'interrupted'
    line. The handlers before are put back on leaving, except for the `graphconv`
    command (`console`): the process exits next, and a signal now must not add a
    traceback to the line already printed, nor be ignored (an exit that hangs, in a
    library's exit handler or a thread it waits for, would then need kill -9): it ends
    the process at once, with the status the command returned (the block appends it to
    the list this yields), as everything the command wrote is complete by then."""
    status: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield status
        return
    stopping: list[int] = []

    def stop(signum, frame):
        if stopping:
            return  # already stopping: let the cleanup finish
        stopping.append(signum)
        raise KeyboardInterrupt() if signum == signal.SIGINT else Terminated()

    previous = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, stop)
        yield status
    finally:
        if console:
            for signum in previous:
                signal.signal(signum, lambda signum, frame: _leave_now(status[0] if status else 128 + signum))
        else:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _leave_now(status: int) -> None:
    """End the process with `status`, its output flushed, running no exit handler."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe, a closed stream: nothing more can go out
            pass
    os._exit(status)


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage error printed as one `graphconv:` line (exit 2) like
    every other user error, instead of the usage block and the message. Options are
    never abbreviated: argparse took `compile --stride 8` as --stride-method 8, and a
    prefix that names one option today names two when an option is added."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        command = self.prog.partition(" ")[2]
        where = f"{command}: " if command else ""
        self.exit(EXIT_USER_ERROR, f"graphconv: {where}{message} (see {self.prog} --help)\n")


DEVICE_HELP = ("where the kernels run: cpu (the default: every core this process may use; --threads N for "
               "fewer), cuda (an NVIDIA GPU, through numba-cuda: pip install 'graphconv[cuda]'), auto (cuda where a "
               "GPU is usable, else cpu), or a device a --plugin registers")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="graphconv",
        description="Compile ConvNet classifiers (YAML specs or ONNX models) into fully convolutional networks "
                    "that slide over large images in one pass, and run them on CPU or CUDA.")
    _add_common_options(parser, defaults=True)
    parser.add_argument("--version", action="version", version=f"graphconv {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    model_files = ("run", "compile", "inspect", "verify", "export")
    for name, add_command in COMMANDS.items():
        command = add_command(sub)
        if name in model_files:
            _add_model_files_options(command.add_argument_group("the model (what its spec or file does not say)"))
        _add_common_options(command, defaults=False)
        command.epilog = "examples (in graphconv's checkout):\n" + "\n".join(f"  {line}" for line in EXAMPLES[name])
        command.formatter_class = _ExamplesKeptFormatter
    return parser


def _add_run_command(sub) -> argparse.ArgumentParser:
    """The `run` command's arguments, in sections of its --help."""
    parser = sub.add_parser("run", help="run a spec or compiled model on an array or image",
                            description="Run MODEL (a spec file, an ONNX model or a compiled model "
                                        "directory) on an input array or image and save or summarise "
                                        "its output.")
    parser.add_argument("model", type=_path, help="spec .yaml file, .onnx model or compiled model directory")
    _add_run_input_options(parser.add_argument_group("input (one of --input, --image, --images)"))
    _add_run_cells_options(parser.add_argument_group("cells"))
    _add_run_output_options(parser.add_argument_group("output"))
    _add_run_heatmap_options(parser.add_argument_group("heatmap"))
    _add_run_scales_options(parser.add_argument_group("one class vector per image"))
    _add_run_execution_options(parser.add_argument_group("execution"))
    parser.set_defaults(handler=cmd_run)
    return parser


def _add_run_input_options(group) -> None:
    """`run`'s options of its --help section "input (one of --input, --image, --images)":
    the array or images to map, and how an image is read."""
    source = group.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", type=_path, help="float32 .npy of shape (N, C, H, W) or (C, H, W)")
    source.add_argument("--image", type=_path, action=_GivenOnce,
                        help="an image file (needs Pillow: pip install 'graphconv[images]'); "
                             "TIFF/BigTIFF and .zarr arrays are read a tile at a time")
    source.add_argument("--images", type=_path, metavar="GLOB", action=_GivenOnce,
                        help="many images ('photos/*.jpg', quoted; 'slides/**/*.svs' through subfolders; a "
                             "folder: every image in it; @LIST: the images a text file lists, one path a line): "
                             "one map each, written to --output-dir")
    _add_image_reading_options(group)
    group.add_argument("--resize", type=_positive_int, nargs="+", metavar="PIXELS",
                       help="resize the image first, or each of --images: to H x W (two numbers), or its shorter "
                            "side to S (one) "
                            "with the aspect kept (Pillow's bilinear on the float pixels, antialiased when "
                            "shrinking, as torchvision's Resize; --scales resizes the same way); the map's cells "
                            "stand on the image as stored")
    group.add_argument("--pad-image", choices=PAD_MODES, metavar="MODE",
                       help="pad the image so the map reaches its edges: a cell for every stride x stride block, "
                            "ceil(H/stride) x ceil(W/stride) of them, each cell's crop centred on its block (to within "
                            "half a stride; the unpadded map's cells are among them, at the same places); MODE fills "
                            "the border: constant (0 after the preprocess, "
                            "what a first conv's zero padding holds), reflect (mirrored about the edge pixel) or "
                            "replicate (the edge pixel repeated)")


def _add_run_cells_options(group) -> None:
    """`run`'s options of its --help section "cells": which cells of the map are computed,
    and which channels kept."""
    group.add_argument("--crops", type=_positive_int, nargs="?", const=0, metavar="STRIDE",
                       help="run the classifier itself on every crop of its input size, STRIDE pixels apart "
                            "(default: the network's stride): the map a dense pass stands for, exact for any "
                            "network (squeeze-and-excitation ones too), without the dense pass's shared work")
    group.add_argument("--full-map", action="store_true",
                       help="keep every cell the network computes, also those whose crop would run off "
                            "the image (dropped by default)")
    group.add_argument("--skip-background", type=_fraction, nargs="?", const=DEFAULT_THRESHOLD, metavar="S",
                       help="do not compute the tiles with no tissue in them (a slide's glass, a page's white): "
                            "their cells are NaN (65535 with --reduce argmax); tissue is colour of HSV saturation "
                            f"S or more, or greys darker than white by S (default {DEFAULT_THRESHOLD}); in a raster "
                            "with no-data (GDAL's tag, --nodata, NaN in floats), no-data cells are left out anyway: "
                            "see --max-nodata")
    group.add_argument("--skip-damaged", action="store_true",
                       help="map a TIFF with tiles or strips that cannot be decoded (damaged, cut short): the cells "
                            "whose crops reach them are left out (NaN; 65535 with --reduce argmax), the rest "
                            "computed, and a note names them (without it such a tile stops the run)")
    group.add_argument("--mask", type=_path, metavar="MASK",
                       help="compute only the cells this image marks (its non-zero pixels: a tissue mask from "
                            "QuPath or HistoQC, any size, stretched over the whole --image); the others are NaN, as "
                            "--skip-background leaves them")
    _add_nodata_options(group)
    group.add_argument("--classes", type=_class_list, metavar="K1,K2,...",
                       help="keep only these score channels: class indices, or names as the labels file has them")


def _add_run_output_options(group) -> None:
    """`run`'s options of its --help section "output": what is written and printed."""
    group.add_argument("--output", "-o", type=_path,
                       help="write the output array here (.npy; .zarr for maps too big for memory; .tif: "
                            "a map of K bands, georeferenced like a GeoTIFF image)")
    group.add_argument("--output-dir", type=_path, metavar="DIR",
                       help="with --images: where each image's <stem>.npy goes, in the subfolders the images "
                            "have below the folder the pattern starts from, and graphconv-maps.csv, what became of "
                            "each image")
    group.add_argument("--output-format", choices=("npy", "tif"), default="npy",
                       help="with --images: each map as .npy (default) or as .tif (georeferenced over GeoTIFFs)")
    group.add_argument("--skip-existing", action="store_true",
                       help="with --images: leave out each image whose map (and heatmap, with --heatmap) is in "
                            "--output-dir already, so a stopped batch goes on where it stopped")
    group.add_argument("--skip-failed", action="store_true",
                       help="with --images: leave out each image whose map failed in an earlier run into "
                            "--output-dir with the same settings, the image file unchanged since (its row in "
                            "graphconv-maps.csv keeps the error), so a nightly rerun over a folder with a broken "
                            "photo exits 0; an image replaced or a setting changed is tried again")
    group.add_argument("--shard", type=_shard, metavar="K/N",
                       help="with --images: map only part K of N (K from 0 to N-1) of the batch, every Nth image "
                            "from the Kth: one job array task's share (--shard $SLURM_ARRAY_TASK_ID/N with "
                            "--array=0-(N-1)); the N parts together are the whole batch, their maps in the same "
                            "subfolders of one --output-dir")
    group.add_argument("--resume", action="store_true",
                       help="with --image and --output (.zarr, .npy or .tif): write the map into OUTPUT.partial, "
                            "kept if the run stops (Ctrl-C, a scheduler's SIGTERM, a crash), each finished tile "
                            "listed; the same command with --resume computes only the tiles not done, and the "
                            "map is renamed into place when complete. With --images: so for each map computed in "
                            "tiles, and the images whose maps are finished are left out (as --skip-existing)")
    group.add_argument("--top", type=_positive_int, metavar="K",
                       help="print the K best classes (of a map, by their mean over its cells, or --top-by max; with "
                            "--images, a line per image as it is done)")
    group.add_argument("--top-by", choices=("mean", "max"), default=None,
                       help="how --top ranks a map's classes: by their mean over its computed cells (the default: "
                            "what the whole image shows), or by their best cell (max: what shows anywhere in it, a "
                            "small animal in a camera-trap photo)")
    group.add_argument("--quiet", action="store_true", help="no progress bar")
    group.add_argument("--profile", action="store_true", help="print per-layer times of this run")


def _add_run_heatmap_options(group) -> None:
    """`run`'s options of its --help section "heatmap": a class's scores drawn over the
    image."""
    group.add_argument("--heatmap", type=_heatmap_class, metavar="CLASS|top",
                       help="draw this class's score map over the image (its index, or its name as the labels "
                            "file has it), or 'top': the best class of each cell")
    group.add_argument("--heatmap-out", type=_path, metavar="FILE",
                       help="the heatmap image, in the format its extension names (.png, .jpg, ...; default: "
                            "<output name>-heatmap-<class>.png beside --output, else <image name>-heatmap-"
                            "<class>.png in the current folder)")
    group.add_argument("--heatmap-range", type=_heatmap_range, default="auto", metavar="auto|map|LOW,HIGH",
                       help="the colour scale: 'map' stretches this map's min..max, LOW,HIGH is fixed; "
                            "'auto' (default) is 0..1 for probabilities (a softmax's or a sigmoid's output), "
                            "else 'map'")
    group.add_argument("--heatmap-opacity", type=_opacity, metavar="A",
                       help="how much of each pixel the map's colour takes, more than 0 up to 1 (default 0.5; "
                            "0.45 for top); at 1 the picture is hidden and the colours are the bar's own")
    group.add_argument("--heatmap-bands", type=_heatmap_bands, metavar="R,G,B|B",
                       help="a raster's bands to draw the heatmap over, numbered from 1 as --bands numbers them: "
                            "three as red, green and blue (a 13-band Sentinel-2 TIFF's true colour: 4,3,2), or one "
                            "as grey, each stretched from its 2nd to 98th percentile (default: the bands the network "
                            "takes where they make a picture, else the first, grey)")


def _add_run_scales_options(group) -> None:
    """`run`'s options of its --help section "one class vector per image": multi-scale
    evaluation, each image's maps reduced to a vector."""
    group.add_argument("--scales", type=_int_list, metavar="S1,S2,...",
                       help="evaluate with the shorter image side resized to each scale (as --resize resizes: "
                            "Pillow's antialiased bilinear) and reduce every score map to one class vector (saved "
                            "by --output)")
    group.add_argument("--flip", action="store_true", help="with --scales: also the mirror images")
    group.add_argument("--reduce", choices=("mean", "max", "argmax"),
                       help="with --scales: mean (default) or max over positions, then scales and flips; "
                            "argmax (on an image, tiled): write the winning class per cell (uint16) instead of "
                            "the scores")


def _add_run_execution_options(group) -> None:
    """`run`'s options of its --help section "execution": where and how the network runs."""
    group.add_argument("--tile", type=_positive_int, metavar="N",
                       help="evaluate in exact tiles of at most N x N input pixels (bounded memory; "
                            "the whole-image pass's map to float32 rounding; the same --tile, the same bits)")
    group.add_argument("--workers", type=_positive_int, metavar="N",
                       help="run tiles (or --images) on a local Dask cluster of N worker processes")
    group.add_argument("--scheduler", metavar="ADDRESS", help="use a running Dask cluster (tcp://host:port)")
    group.add_argument("--device", default="cpu", metavar="DEVICE", help=DEVICE_HELP)
    _add_threads_option(group)
    _add_plugin_option(group, "load passes from a .py file or an importable module (repeatable); run itself runs "
                            "no passes (a spec runs as written): to run yours, compile with them first "
                            "(compile SPEC --plugin FILE --passes default,NAME -o DIR), then run DIR")
    group.add_argument("--passes", help=argparse.SUPPRESS)  # refused with the way to run one's passes


def _add_compile_command(sub) -> argparse.ArgumentParser:
    """The `compile` command's arguments."""
    parser = sub.add_parser("compile", help="run the pass pipeline and write a compiled model",
                            description="Run the pass pipeline on SPEC and write DIR: a self-contained "
                                        "model (model.yaml + the weights and labels files it names) that "
                                        "`run`, `inspect` and `export` take.")
    parser.add_argument("spec", type=_path, help="spec .yaml file or .onnx model")
    parser.add_argument("--output", "-o", type=_path, required=True, help="compiled model directory to write")
    parser.add_argument("--passes", help="pipeline, e.g. 'shape-inference,fc-to-conv,my-pass{k=1}'; the word "
                                         "'default' stands for the default passes where it is written, so "
                                         "'default,my-pass' runs your pass after them "
                                         f"(default: {','.join(DEFAULT_PIPELINE)})")
    parser.add_argument("--output-stride", type=int, metavar="S",
                        help="finer score map: S must divide the network's total stride")
    parser.add_argument("--stride-method", default="auto", choices=STRIDE_METHODS,
                        help="how to reach --output-stride (auto: dilate for a network whose layers pad, where it "
                             "can be dilated, as shift would read zeros inside the image; else the one with fewer "
                             "FLOPs)")
    parser.add_argument("--print-ir-before", action="append", default=[], metavar="PASS",
                        help="print the IR before PASS ('all' for every pass); repeatable")
    parser.add_argument("--print-ir-after", action="append", default=[], metavar="PASS",
                        help="print the IR after PASS ('all' for every pass); repeatable")
    parser.add_argument("--timings", action="store_true", help="print the time each pass took")
    parser.add_argument("--no-verify", action="store_true", help="skip the IR verifier between passes (the "
                        "result is still verified before it is written)")
    _add_plugin_option(parser)
    parser.set_defaults(handler=cmd_compile)
    return parser


def _add_inspect_command(sub) -> argparse.ArgumentParser:
    """The `inspect` command's arguments."""
    parser = sub.add_parser("inspect", help="layers, shapes, parameters, FLOPs and receptive fields",
                            description="Print a table of MODEL's layers for an input size.")
    parser.add_argument("model", type=_path, help="spec .yaml file, .onnx model or compiled model directory")
    parser.add_argument("--input-size", type=_positive_int, nargs=2, metavar=("H", "W"),
                        help="image size (default: the spec's crop)")
    parser.add_argument("--image", type=_path, metavar="IMAGE",
                        help="the image size as run reads IMAGE (with --level, --downsample, --mpp, --bands): a "
                             "slide's tile plan with --tile, without working out its level's size")
    _add_image_reading_options(parser)
    parser.add_argument("--scales", type=_int_list, metavar="S1,S2,...",
                        help="score-map size and FLOPs with the image's shorter side at each scale "
                             "(of an image of --input-size, default square)")
    parser.add_argument("--ir", action="store_true", help="also print the IR as text")
    parser.add_argument("--dot", type=_path, metavar="FILE.dot",
                        help="also write the graph as Graphviz DOT, a box per layer (dot -Tsvg FILE.dot -o graph.svg)")
    parser.add_argument("--tile", type=_positive_int, metavar="N",
                        help="the tile plan for an image of --input-size: halo, tiles, extra FLOPs, peak memory")
    parser.add_argument("--profile", action="store_true",
                        help="time runs on random input (a warm-up, then 3 to 25, about a second's worth) and "
                             "show each layer's median time")
    parser.add_argument("--against", choices=AGAINST, metavar="RUNTIME",
                        help="with --profile (implied): run onnxruntime on the same input and threads too, on the "
                             "model as graphconv exports it: its time per layer beside graphconv's, whole-run "
                             "medians and how far the outputs differ (needs onnxruntime; --device cpu)")
    parser.add_argument("--device", default="cpu", metavar="DEVICE", help=DEVICE_HELP)
    _add_threads_option(parser)
    _add_plugin_option(parser, PLUGIN_OPS_HELP)
    parser.set_defaults(handler=cmd_inspect)
    return parser


def _add_verify_command(sub) -> argparse.ArgumentParser:
    """The `verify` command's arguments."""
    parser = sub.add_parser("verify", help="check the conversion, and the dense pass against every crop",
                            description="Compile SPEC and check (a) the conversion: the converted network "
                                        "on the classifier's crop gives the classifier's output; (b) the "
                                        "converted network slid over a random image (or a region of your "
                                        "--image, read as run reads it) against the classifier on every crop, "
                                        "and for a padded network which layers' padding makes which positions "
                                        "differ, and by how much; with --image, also in how many cells the top "
                                        "class changes. Exit 0 when the conversion "
                                        "is exact and (b) differs only where padding, a ceil_mode window's overhang "
                                        "or an upsample's edge interpolation reaches; 1 otherwise; 2 "
                                        "for a network that cannot be compiled (a squeeze-and-excitation "
                                        "gate: check it with run --crops) or other bad input.")
    parser.add_argument("spec", type=_path,
                        help="spec .yaml file or .onnx model (the classifier, before compiling), or a "
                                     "folder graphconv compile wrote (checked with the stride it was compiled to)")
    pixels = parser.add_mutually_exclusive_group(required=True)
    pixels.add_argument("--input-size", type=_positive_int, nargs=2, metavar=("H", "W"),
                        help="the random image's size, larger than the crop")
    pixels.add_argument("--image", type=_path, metavar="IMAGE",
                        help="check on a region of this image, read and preprocessed as run reads it (random "
                             "pixels can hide what padding does to real ones); also says in how many cells the "
                             "top class changes")
    parser.add_argument("--region", type=_natural_int, nargs=4, metavar=("TOP", "LEFT", "HEIGHT", "WIDTH"),
                        help="with --image: the region to check, in the image's level-0 pixels, grown to the whole "
                             "cells of run's map that cover it (a spot smaller than a crop grows to the crop, or few, "
                             "starting at or just before it; default: "
                             f"{VERIFY_REGION_CELLS}x{VERIFY_REGION_CELLS} cells at the image's centre, or at the "
                             "centre of its data where it has no-data, since the crop loop runs the classifier once "
                             "per cell)")
    _add_image_reading_options(parser)
    _add_nodata_options(parser)
    parser.add_argument("--passes", help="the pipeline to check, as compile takes it, 'default' included (default: "
                                         "compile's; your own passes with --plugin)")
    parser.add_argument("--output-stride", type=int, metavar="S", help="compile for this finer stride, as compile does")
    parser.add_argument("--stride-method", default="auto", choices=STRIDE_METHODS,
                        help="how to reach --output-stride, as compile's")
    parser.add_argument("--batch", type=_positive_int, help="images in the random batch (default 1)")
    parser.add_argument("--tolerance", type=_tolerance, help="max abs difference (default 1e-4 x max score)")
    parser.add_argument("--seed", type=_natural_int, help="the random image's seed (default 0)")
    parser.add_argument("--strict", action="store_true",
                        help="also exit 1 when padding makes the dense pass differ from the crop loop")
    parser.add_argument("--device", default="cpu", metavar="DEVICE", help=DEVICE_HELP)
    _add_threads_option(parser)
    _add_plugin_option(parser)
    parser.set_defaults(handler=cmd_verify)
    return parser


def _add_import_command(sub) -> argparse.ArgumentParser:
    """The `import` command's arguments."""
    parser = sub.add_parser("import", help="turn an ONNX model into an editable spec and weights",
                            description="Read MODEL.onnx and write NET.yaml (a readable spec, layer "
                                        "names from the model's PyTorch module paths) and NET.npz "
                                        "(its weights) beside it; the spec loads back to the same "
                                        "network.")
    parser.add_argument("model", type=_path, help=".onnx model (or a plugin front end's file)")
    parser.add_argument("--output", "-o", type=_path, required=True, metavar="NET.yaml", help="spec file to write")
    parser.add_argument("--scale", type=float, metavar="S", help="preprocess: multiply pixels (0..255) by S first")
    parser.add_argument("--values", choices=PIXEL_VALUES, default=None,
                        help="preprocess: the pixels --scale multiplies: on 0..255 (default; 16-bit data divided by "
                             "257) or as the file stores them (satellite reflectances, elevations)")
    parser.add_argument("--mean", type=_float_list, metavar="M1,M2,M3",
                        help="preprocess: then subtract per channel (one number: the same for every channel)")
    parser.add_argument("--std", type=_float_list, metavar="S1,S2,S3",
                        help="preprocess: then divide per channel (one number: the same for every channel)")
    parser.add_argument("--labels", type=_path, metavar="TXT",
                        help="class names, one per line (copied beside the spec)")
    parser.add_argument("--crop-size", type=_positive_int, nargs=2, metavar=("H", "W"),
                        help="the training crop, for a model whose input size is dynamic")
    parser.add_argument("--task", choices=TASKS, default="classification",
                        help="segmentation: the network predicts a map already (a U-Net), and every cell it "
                             "computes on an image is kept (default: a classifier, one cell per crop)")
    parser.add_argument("--activation", choices=OUTPUT_ACTIVATIONS, help=ACTIVATION_HELP + " (the spec ends in it)")
    _add_plugin_option(parser, "load a plugin (.py file or importable module; repeatable): one that registers a front "
                            "end (graphconv.frontends.register_frontend) imports its format")
    parser.set_defaults(handler=cmd_import)
    return parser


def _add_export_command(sub) -> argparse.ArgumentParser:
    """The `export` command's arguments."""
    parser = sub.add_parser("export", help="write a (compiled) model as ONNX, dynamic in N, H and W",
                            description="Write MODEL (usually a compiled model directory) as an ONNX "
                                        "file (op set 19, one file, no external data) whose input has dynamic "
                                        "batch, height and width, for onnxruntime, TensorRT and other ONNX "
                                        "runtimes. Its output is the full map, every cell computed (graphconv "
                                        "run's map, plus a last row/column where the crops would run off the "
                                        "image). Metadata states the crop, preprocess, labels, input size rule "
                                        "and where each cell stands (graphconv.* keys), so the file imports "
                                        "back or runs with graphconv run as it is. An existing file is replaced "
                                        "only if graphconv exported it.")
    parser.add_argument("model", type=_path, help="compiled model directory (or a spec / .onnx model)")
    parser.add_argument("--output", "-o", type=_path, required=True, metavar="FCN.onnx", help="ONNX file to write")
    parser.add_argument("--input-size", type=_positive_int, nargs=2, metavar=("H", "W"),
                        help="fix the input's height and width (the output's rows and columns follow): for TensorRT "
                             "engines and other runtimes that build for one shape (default: dynamic)")
    parser.add_argument("--batch", type=_positive_int, metavar="N", help="fix the batch (default: dynamic)")
    parser.add_argument("--pixels", action="store_true",
                        help="the input is uint8 (N, H, W, C) pixels as an image library decodes them, and the graph "
                             "applies the model's preprocess (scale, mean, std) itself (default: float32 (N, C, H, W) "
                             "already preprocessed)")
    parser.add_argument("--argmax", action="store_true",
                        help="add an output 'classes': each cell's top class (int64, (N, rows, cols)), beside the "
                             "scores")
    _add_plugin_option(parser, PLUGIN_OPS_HELP)
    parser.set_defaults(handler=cmd_export)
    return parser


def _add_cells_command(sub) -> argparse.ArgumentParser:
    """The `cells` command's arguments."""
    parser = sub.add_parser("cells", help="write a map's cells as GeoJSON (QuPath, QGIS) or CSV",
                            description="Write the cells of MAP (a .tif or .zarr map graphconv run wrote: it "
                                        "states where its cells stand; or an .npy map of an --images batch, "
                                        "whose graphconv-maps.csv states it) as GeoJSON or CSV, as the output's name "
                                        "says: each cell the square a stride wide around its centre, with its best "
                                        "class and every class's score. Over an image with no georeference (a "
                                        "slide) the coordinates are its full-resolution pixels, each cell a QuPath "
                                        "tile classified by its best class with its scores as measurements (drag "
                                        "the .geojson onto the slide in QuPath); over a georeferenced image they "
                                        "are its CRS, each cell's scores flat attributes (QGIS, geopandas). A "
                                        "one-score model's cell is its class where the probability is at least "
                                        "0.5, a multi-label (sigmoid) model's its best class where that one's is, "
                                        "and --top-class keeps its cells calling a class named (its own score at "
                                        "least --min-score, 0.5 unless given); in a map of some classes (run "
                                        "--classes) a cell is classified only where its scores prove that class the model's best, and written "
                                        "unclassified elsewhere. Cells not computed are left out. An existing "
                                        "file is replaced only if graphconv wrote it.")
    parser.add_argument("map", type=_path,
                        help=".tif or .zarr map written by graphconv run, or an .npy map an --images batch listed")
    parser.add_argument("--output", "-o", type=_path, required=True, metavar="CELLS.geojson|CELLS.csv",
                        help="the file to write: .geojson (or .json, as QuPath also names GeoJSON) or .csv")
    parser.add_argument("--top-class", type=_class_list, metavar="K1,K2,...",
                        help="only the cells classified as one of these (class indices, or names as the "
                             "model's labels have them): the tumour tiles of a slide")
    parser.add_argument("--min-score", type=_finite_float, metavar="S",
                        help="only the cells whose class's score is at least S (a confident call; not of a "
                             "--reduce argmax map, which holds no scores)")
    parser.add_argument("--regions", action="store_true",
                        help="merge each class's cells into polygons, one GeoJSON feature per class (a "
                             "MultiPolygon of each patch's outline and holes, exactly along the cells' squares): "
                             "over a slide a QuPath annotation of the class, whose area QuPath measures, not a tile "
                             "per cell; a multi-label model's regions are each class's cells calling it, and "
                             "overlap")
    parser.set_defaults(handler=cmd_cells)
    return parser


def _add_passes_command(sub) -> argparse.ArgumentParser:
    """The `passes` command's arguments."""
    parser = sub.add_parser("passes", help="list the registered passes",
                            description="List built-in and plugin passes, one line each.")
    _add_plugin_option(parser)
    parser.set_defaults(handler=cmd_passes)
    return parser


def _add_ops_command(sub) -> argparse.ArgumentParser:
    """The `ops` command's arguments."""
    parser = sub.add_parser("ops", help="list the ops a spec may use, or one op's params",
                            description="List the ops a spec file may name, one line each; with an op's name, its "
                                        "inputs, params (kind, default, meaning), weights, and the kernels, PyTorch "
                                        "equivalent and ONNX export it has.")
    parser.add_argument("op", nargs="?", metavar="OP", help="the op to describe")
    _add_plugin_option(parser)
    parser.set_defaults(handler=cmd_ops)
    return parser


COMMANDS = {"run": _add_run_command, "compile": _add_compile_command, "inspect": _add_inspect_command,
            "verify": _add_verify_command, "import": _add_import_command, "export": _add_export_command,
            "cells": _add_cells_command, "passes": _add_passes_command, "ops": _add_ops_command}
"""Each command's name and the function adding its parser, in the order `graphconv --help` lists them."""


# What each command's --help ends with: lines a newcomer can paste in graphconv's checkout
# (the quick start's out/digits-fcn first); test_cli parses every one.
EXAMPLES = {
    "run": ("graphconv run out/digits-fcn --image examples/digits_page.png --output out/scores.npy --heatmap 7",
            "graphconv run out/digits-fcn --image examples/digits_page.png --heatmap top --top 3",
            "graphconv run out/digits-fcn --images examples --output-dir out/maps --top 3",
            "graphconv run specs/digits.yaml --image examples/digits_page.png --crops --output out/crops.npy",
            "graphconv run out/digits-fcn --image examples/digits_page.png --tile 256 --output out/map.tif"),
    "compile": ("graphconv compile specs/digits.yaml -o out/digits-fcn",
                "graphconv compile specs/alexnet.yaml -o out/alexnet-s16 --output-stride 16",
                "graphconv compile specs/digits.yaml -o out/digits-raw --plugin examples/my_passes.py "
                "--passes default,strip-softmax"),
    "inspect": ("graphconv inspect specs/digits.yaml",
                "graphconv inspect out/digits-fcn --input-size 300 400",
                "graphconv inspect out/digits-fcn --image examples/digits_page.png --ir"),
    "verify": ("graphconv verify specs/digits.yaml --input-size 64 64",
               "graphconv verify specs/digits.yaml --image examples/digits_page.png"),
    "import": ("graphconv import resnet18.onnx -o resnet18.yaml --scale 0.00392157 --mean 0.485,0.456,0.406 "
               "--std 0.229,0.224,0.225 --labels classes.txt",),
    "export": ("graphconv export out/digits-fcn -o out/digits-fcn.onnx",),
    "cells": ("graphconv cells out/map.tif -o out/cells.geojson",
              "graphconv cells out/map.tif -o out/sevens.csv --top-class 7 --min-score 0.9",
              "graphconv cells out/map.tif -o out/regions.geojson --regions"),
    "passes": ("graphconv passes", "graphconv passes --plugin examples/my_passes.py"),
    "ops": ("graphconv ops", "graphconv ops maxpool"),
}


class _ExamplesKeptFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that the examples keep their lines (the description is
    still filled to the terminal's width)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line, with a hint where --images was given an unquoted glob: the shell
    hands it over as many files, and argparse said only "unrecognized arguments:
    photos/b.jpg ...". (--images taking them all would swallow a MODEL given after it.)"""
    args, extra = parser.parse_known_args(_negative_values_joined(sys.argv[1:] if argv is None else argv))
    if extra:
        hint = ""
        if getattr(args, "images", None) and not any(arg.startswith("-") for arg in extra):
            hint = (f"; --images takes one pattern ({shown(args.images)}), and {len(extra)} more "
                    f"{agreeing(len(extra), 'path', 'paths')} followed: "
                    "did the shell expand a glob? Quote it, as in --images 'photos/*.jpg'")
        hint = hint or _unknown_option_hint(parser, args.command, extra)
        _command_parser(parser, args.command).error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    return args


OPTIONS_MEANT = {"--stride": "--output-stride", "--out-stride": "--output-stride"}  # what users type for an option


def _unknown_option_hint(parser: argparse.ArgumentParser, command: str, extra: Sequence[str]) -> str:
    """Where the first option the command does not know belongs: another command's
    (`run --output-stride 16`: the stride is compiled in), one of its own spelt nearly so,
    or nothing. argparse said only "unrecognized arguments: --stride 16"."""
    import difflib

    flag = next((arg.split("=")[0] for arg in extra if arg.startswith("--")), None)
    if flag is None:
        return ""
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    meant = OPTIONS_MEANT.get(flag, flag)
    own = commands.choices[command]._option_string_actions if command in commands.choices else {}
    if meant != flag and meant in own:
        return f"; did you mean {meant}?"
    elsewhere = [name for name, sub in commands.choices.items()
                 if name != command and meant in sub._option_string_actions]
    if elsewhere:
        said = f"{meant} (for {flag}?)" if meant != flag else meant
        how = (": the map's stride is compiled in (graphconv compile MODEL -o DIR --output-stride S, then run DIR)"
               if meant == "--output-stride" else "")
        return f"; {said} is an option of graphconv {' and '.join(elsewhere)}, not of {command}{how}"
    close = difflib.get_close_matches(flag, [name for name in own if name.startswith("--")], n=1, cutoff=0.8)
    return f"; did you mean {close[0]}?" if close else ""


def _command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The parser of one command (`run`), whose error names it and points at its own --help."""
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return commands.choices.get(command, parser)


NEGATIVE_VALUE = re.compile(r"-\.?\d")
PLAIN_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")  # argparse's own: it takes these as values


def _negative_values_joined(argv: Sequence[str]) -> list[str]:
    """`--nodata -1e30`, `--shard -1/3`, `--mean -0.5,0.1` as `--nodata=-1e30`: argparse
    takes a value starting with '-' for an option unless it is a plain negative number,
    and said "--nodata: expected one argument" of a value the option's own check would
    take (or name the mistake in: a shard counted from 0 is 0/3, not -1/3)."""
    joined: list[str] = []
    for arg in map(str, argv):
        if (joined and NEGATIVE_VALUE.match(arg) and not PLAIN_NEGATIVE_NUMBER.match(arg)
                and joined[-1].startswith("--") and "=" not in joined[-1] and joined[-1] != "--"):
            joined[-1] = f"{joined[-1]}={arg}"
        else:
            joined.append(arg)
    return joined


def _version() -> str:
    """The installed distribution's version (graphconv.__version__ for a source tree)."""
    try:
        import importlib.metadata
        return importlib.metadata.version("graphconv")
    except Exception:  # not installed: a checkout on the path
        from graphconv import __version__
        return __version__


ACTIVATION_HELP = ("end a model exported giving logits in an activation: softmax (trained with CrossEntropyLoss: "
                   "one class per crop) or sigmoid (BCEWithLogitsLoss: each class a finding of its own, several or "
                   "none per crop); the heatmap's 0..1 scale and the calls at 0.5 of cells, verify and --heatmap top "
                   "read it")


def _add_model_files_options(parser: argparse.ArgumentParser) -> None:
    """Files given on the command line are trusted wherever they are; those a spec
    names must lie inside its folder (graphconv/frontends/yaml.py)."""
    parser.add_argument("--weights", type=_path, metavar="NPZ",
                        help="weights to use instead of the spec's (<layer>.weight / <layer>.bias)")
    parser.add_argument("--labels", type=_path, metavar="TXT", help="class names, one per line, instead of the spec's")
    parser.add_argument("--crop-size", type=_positive_int, nargs=2, metavar=("H", "W"),
                        help="the training crop of an ONNX model whose input size is dynamic")
    parser.add_argument("--task", choices=TASKS,
                        help="segmentation: the network predicts a map itself (a U-Net), and every cell it "
                             "computes is kept (default: what the spec says; an ONNX file: a classifier)")
    parser.add_argument("--activation", choices=OUTPUT_ACTIVATIONS, help=ACTIVATION_HELP)


def _add_common_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """Options accepted before or after the command name (`graphconv --traceback run ...`
    and `graphconv run ... --traceback`). The command's copy has no default, so it does
    not overwrite a value given before the command."""
    default = (lambda value: value) if defaults else (lambda value: argparse.SUPPRESS)
    parser.add_argument("--traceback", action="store_true", default=default(False),
                        help="show the Python traceback of an error")
    parser.add_argument("--memory-limit", metavar="SIZE", default=default(None),
                        help="refuse inputs whose estimated memory exceeds SIZE (e.g. 4G; default 80%% of this "
                             "machine's RAM, or of its container's or batch job's cgroup limit where less)")


def _add_image_reading_options(parser: argparse.ArgumentParser) -> None:
    """How an image is read (its level, how much coarser, its bands): run's, and
    inspect's to plan for the image as run would read it."""
    parser.add_argument("--level", type=_natural_int, default=0, metavar="K",
                        help="a pyramid's level to read, a TIFF's or an OME-Zarr's (0: full resolution; 1, 2, ...: "
                             "the slide's smaller copies, e.g. a 40x scan's 10x level for a classifier trained at 10x)")
    parser.add_argument("--downsample", type=_factor, default=1, metavar="F",
                        help="read the image F times coarser, each pixel the mean of the FxF square it covers (F may "
                             "be fractional; exact in tiles): a 40x slide for a classifier trained at 20x, where the "
                             "pyramid has no 20x level")
    parser.add_argument("--mpp", type=_positive_float, metavar="UM",
                        help="read a slide at UM micrometres per pixel (the classifier's training resolution, e.g. "
                             "0.5 for 20x): the pyramid level and --downsample that reach it, from the pixel size the "
                             "file states")
    parser.add_argument("--bands", type=_int_list, metavar="B1,B2,...",
                        help="a raster's bands to feed the network, in order, numbered from 1 as GDAL numbers them "
                             "(a 13-band Sentinel-2 TIFF's true colour: 4,3,2); TIFF and zarr images hold any "
                             "number of bands")


def _add_nodata_options(parser: argparse.ArgumentParser) -> None:
    """Which of a raster's pixels are no-data and which cells over them are left out:
    run's, and verify --image's, which checks the cells run computes."""
    parser.add_argument("--nodata", type=_nodata_value, metavar="VALUE",
                        help="the raster's no-data value, given here: a pixel holding it in every band fed to the "
                             "network is no-data (as a GeoTIFF's GDAL no-data tag or a zarr _FillValue says, which "
                             "it replaces; 'nan' for NaN): for a scene whose swath border is 0 and whose file "
                             "declares nothing, --nodata 0")
    parser.add_argument("--max-nodata", type=_share, default=None, metavar="FRACTION",
                        help="in a raster with no-data (GDAL's no-data tag, a zarr _FillValue, --nodata, NaN in "
                             "floats): a cell is left out (NaN; 65535 with --reduce argmax) when more than FRACTION "
                             f"of its crop is no-data (default {DEFAULT_MAX_NODATA}; 0 keeps only cells with no "
                             "no-data); no-data pixels go into the network as 0 after the preprocess (its padding's "
                             "value)")
    parser.add_argument("--compute-nodata", action="store_true",
                        help="compute every cell of a raster with no-data, even those wholly over it "
                             "(--max-nodata 1)")


def _nodata_value(text: str) -> float:
    """--nodata's value: a number as GDAL's no-data tag holds one ("0", "-9999", "nan")."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number (or nan), got {shown(text)}") from None


def check_image_reading_options(args: argparse.Namespace) -> None:
    """--mpp picks the level and the factor itself, so it takes neither beside it."""
    if args.mpp is not None and (args.level or args.downsample > 1):
        raise GraphconvError("--mpp picks the level and the downsampling itself: drop --level and --downsample")


PLUGIN_OPS_HELP = ("load a plugin (.py file or importable module; repeatable): a model compiled with ops a plugin "
                   "registers needs it on every command")


def _add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=_positive_int, metavar="N",
                        help="run the CPU kernels on N threads (default: one per core this process may use: its CPU "
                             "affinity and its container's or batch job's CPU quota); with --workers, N each")


def _add_plugin_option(parser: argparse.ArgumentParser,
                       text: str = "load passes from a .py file or an importable module; repeatable") -> None:
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE_OR_MODULE", help=text)


# ---- commands -----------------------------------------------------------------------------

def load_model(args: argparse.Namespace, path: str):
    """The Model a command works on, with --weights, --labels, --crop-size, --task and
    --activation applied; says on stderr, once, when its weights are seeded."""
    from graphconv.model import Model

    model = Model.load(path, weights=args.weights, labels=args.labels, crop_size=args.crop_size, task=args.task,
                       activation=args.activation)
    note_what_the_network_is(model.graph)
    return model


def load_model_for_table(args: argparse.Namespace):
    """The model for a table of shapes, parameter counts and FLOPs, which needs no weight
    values: a network without weights is not seeded (drawing VGG-16's 138M seeded weights
    took 8 of `inspect`'s 9 s); each missing weight is a zero-byte stand-in of its shape
    (np.broadcast_to), so counts and byte estimates stay right. A weights file the spec
    names is still read whole: the table also checks it (names, shapes, NaN), and reading
    .npz headers alone would need a second reader beside arrays.load_npz."""
    from graphconv.frontends import load_network
    from graphconv.model import Model
    from graphconv.shapes import infer_shapes

    graph = load_network(args.model, weights=args.weights, labels=args.labels, crop_size=args.crop_size,
                         init_missing_weights=False, task=args.task, activation=args.activation)
    from graphconv.model import check_labels
    check_labels(graph, args.labels or args.model)
    shapes = infer_shapes(graph, check_weights=False)
    for node in graph.layers():
        if node.opdef.has_weights and not node.weights:
            expected = node.opdef.weight_shapes(node.params, [shapes[s.name] for s in node.inputs])
            graph.nx.nodes[node.name]["weights"].update(
                {key: np.broadcast_to(np.zeros((), np.float32), shape) for key, shape in expected.items()})
            graph.meta["seeded_weights"] = True  # what running it would use
    note_what_the_network_is(graph)
    return Model(graph)


def note_what_the_network_is(graph) -> None:
    """The notes every command that reads a network gives about it, once, on stderr."""
    from graphconv.images import preprocess_scale_note
    from graphconv.shapes import dropped_layers_note, map_output_note, narrow_weights_note

    note_seeded_weights(graph)
    preprocess = graph.meta.get("preprocess")
    for text in (map_output_note(graph), dropped_layers_note(graph), preprocess_scale_note(preprocess),
                 narrow_weights_note(graph)):
        if text:
            note(text)


def note_seeded_weights(graph) -> None:
    """The one note for a network without trained weights (a spec that names no weights
    file, or a model compiled from one, which records `seeded_weights: true`): on stderr,
    so that stdout stays the command's result, once the command has succeeded."""
    if graph.meta.get("seeded_weights") and graph.meta.get("compiled"):  # its folder holds them, untrained
        note(f"note: {graph.name} was compiled from a spec without trained weights: its weights are the "
             "deterministic seeded (random) ones")
    elif graph.meta.get("seeded_weights"):
        note(f"note: {graph.name} has no weights file; using deterministic seeded (random) weights")




_NOTES: list[str] = []  # printed on stderr, each once, when the command succeeds


def note_cold_kernels(model, device: str, *more_models) -> bool:
    """Before a first run on a cold kernel cache: say, now and on stderr, why it takes a
    while (graphconv/kernel_cache.py); whether it did. `more_models` run in the same
    command (verify's classifier on its crops, beside the compiled network)."""
    from graphconv.kernel_cache import COLD_NOTE, cold_kernel_modules

    cold = any(cold_kernel_modules(m.graph, m.executor(device).device) for m in (model, *more_models))
    if cold:
        print(COLD_NOTE, file=sys.stderr, flush=True)
    return cold


COMPILING = "compiling kernels: a first run's time"


def compiling_said(seconds: float) -> str:
    """What a run's time adds of the kernels numba compiled during it
    (`kernel_cache.compile_clock`): the seconds, as a first run's are not the next's."""
    return f" ({seconds:.1f} s of it {COMPILING})" if seconds >= 0.05 else ""


def note(text: str) -> None:
    if text not in _NOTES:
        _NOTES.append(text)


def cmd_run(args: argparse.Namespace) -> int:
    from graphconv.model import as_batch

    args.heatmap_out = _heatmap_path(args)
    _refuse_run_option_clashes(args)
    _refuse_image_options_without_an_image(args)
    _refuse_batch_options_without_a_batch(args)
    _refuse_cell_options_without_an_image(args)
    settle_nodata_options(args)
    if args.images:
        from graphconv.tiled_cli import run_images_command
        return run_images_command(args)
    if args.image:
        _refuse_a_batch_given_as_one_image(args.image)
    _check_output_paths(args)
    model = load_model(args, args.model)
    _check_outputs_for(args, model)
    if args.image:
        note_pixels_as_they_are(args, model)
    from graphconv.tiled_cli import grid_for, run_tiled_command, tiling_reason
    grid = grid_for(args, model)
    note_dense_padding(args, model)
    if args.image:
        reason = tiling_reason(args, model, grid)
        if reason is not None:
            return run_tiled_command(args, model, grid, reason)
    elif args.tile or args.workers or args.scheduler or args.reduce == "argmax" or args.classes:
        raise GraphconvError("--tile, --workers, --scheduler, --reduce argmax and --classes apply to --image and "
                             "--images runs (an --input array is the network's input, read whole: run the image it "
                             "was made from with --image)")
    x, picture = _read_image(args, model) if args.image else (_read_array(args), None)
    x = as_batch(x, model.crop_shape[0], file=args.image or args.input)
    if not args.image:
        _note_pixels_not_preprocessed(args, model, x)
    if x.shape[0] != 1 and is_tiff_output(args.output):  # before the run, naming the file asked for
        raise GraphconvError(f"a TIFF map holds one image's map, and {os.path.basename(args.input)} holds {x.shape[0]} "
                             f"images: write .npy{'' if model.returns_vectors else ' or .zarr'}", file=args.output)
    margin = (0, 0)
    if args.pad_image:
        from graphconv.sources import pad_batch
        x, margin = pad_batch(x, args.pad_image, grid.cell_area)
    _spare_the_users_npy(args, model, grid, x)
    if args.crops is not None:
        return _run_crops(args, model, grid, x, picture, margin)
    if args.scales:
        return _run_scales(args, model, x)
    return _run_whole(args, model, x, picture, margin)


def _refuse_run_option_clashes(args: argparse.Namespace) -> None:
    """run's options that contradict each other, or ask for what another already does."""
    if args.passes is not None:
        plugins = "".join(f" --plugin {shlex.quote(p)}" for p in args.plugin)
        raise GraphconvError(f"run takes no --passes: compile runs them (graphconv compile {shlex.quote(args.model)}"
                             f"{plugins} --passes {shlex.quote(args.passes)} -o DIR), then run DIR")
    if args.workers and args.scheduler:  # --workers was ignored
        raise GraphconvError("--workers starts a Dask cluster on this machine and --scheduler uses a running one: "
                             "give one of them (a running cluster's workers are those it has)")
    if args.full_map and (args.scales or args.images or args.tile or args.workers):
        raise GraphconvError("--full-map is for one image or array evaluated whole (not --scales, "
                             "--images, --tile or --workers)")
    if args.scales and is_tiff_output(args.output):
        raise GraphconvError("--scales reduces every map to one class vector: write it as .npy", file=args.output)
    if args.scales and args.reduce == "argmax":
        raise GraphconvError("--reduce argmax writes a class map; with --scales use mean or max")
    if args.top_by and not args.top:
        raise GraphconvError("--top-by says how --top ranks the classes: give --top K too")
    if args.top_by and args.scales:
        raise GraphconvError("--scales ranks the classes by its one class vector (--reduce mean|max over the "
                             "scales): leave out --top-by")
    if args.top and args.reduce == "argmax":  # it printed nothing
        raise GraphconvError("--top ranks the classes by their mean score over the map, and --reduce argmax keeps "
                             "no scores (only each cell's winning class): leave one of them out")
    if (args.flip or args.reduce in ("mean", "max")) and not args.scales:
        raise GraphconvError("--flip and --reduce mean|max apply to --scales runs")
    if args.crops is not None and (args.scales or args.full_map or args.profile):
        raise GraphconvError("--crops runs the classifier on each crop of the image as it is (not with "
                             "--scales, --full-map or --profile)")
    if args.pad_image and (args.scales or args.full_map):
        raise GraphconvError("--pad-image pads an image for its map to reach the edges (not with --scales, which "
                             "reduces the maps to one vector, or --full-map, which keeps the cells past them)")


def _refuse_image_options_without_an_image(args: argparse.Namespace) -> None:
    """The options for reading an image (a level, a pixel size, bands, a resize) refused
    without --image or --images, or with others that change its size too."""
    from graphconv.sources import is_ome_zarr, is_tiff
    if args.level and not (args.images or args.image and (is_tiff(args.image) or is_ome_zarr(args.image))):
        raise GraphconvError("--level picks a level of a pyramid (a TIFF such as .svs, .ndpi, OME-TIFF, or an "
                             "OME-Zarr): " + ("this image has one level" if args.image else
                                              "give one with --image or --images"), file=args.image or args.input)
    check_image_reading_options(args)
    if args.mpp is not None and not (args.image or args.images):
        raise GraphconvError("--mpp reads a slide at a pixel size: give --image or --images", file=args.input)
    if args.downsample > 1 and not (args.image or args.images):
        raise GraphconvError("--downsample reads an image coarser: give --image or --images", file=args.input)
    if args.resize and len(args.resize) > 2:
        raise GraphconvError(f"--resize takes S (the shorter side) or H W, not {len(args.resize)} numbers")
    if args.downsample > 1 and (args.resize or args.scales):
        raise GraphconvError("--downsample and --resize/--scales both change the image's size: use one")
    if args.bands and not (args.image or args.images):
        raise GraphconvError("--bands picks bands of an image: give --image or --images", file=args.input)


def _refuse_batch_options_without_a_batch(args: argparse.Namespace) -> None:
    """The options of an --images batch (and --resume, which also continues one image's
    tiled map) refused where there is none."""
    if args.shard and not args.images:
        raise GraphconvError("--shard maps a part of an --images batch: give --images")
    if args.skip_existing and not args.images:
        raise GraphconvError("--skip-existing leaves out the images of an --images batch whose maps are there")
    if args.skip_failed and not args.images:
        raise GraphconvError("--skip-failed leaves out the images of an --images batch that failed before")
    if args.output_dir and not args.images:
        raise GraphconvError("--output-dir is where --images writes its maps; for one image or array, name the "
                             "file: --output MAP")
    if args.resume and not (args.image or args.images):
        raise GraphconvError("--resume continues an image's tiled map: give --image and --output (or an --images "
                             "batch)")
    if args.resume and args.image and not (args.output or "").rstrip("/").lower().endswith(
            (".zarr", ".npy", ".tif", ".tiff")):
        raise GraphconvError("--resume keeps the tiles done in OUTPUT.partial: give --output MAP.zarr, MAP.npy "
                             "or MAP.tif")
    if args.output_format != "npy" and not args.images:
        raise GraphconvError("--output-format names the maps --images writes; for one image, name --output map.tif")


def _refuse_cell_options_without_an_image(args: argparse.Namespace) -> None:
    """The options choosing which cells to compute (tissue, a mask, no-data) refused
    without an image to look at, or given two ways."""
    if args.skip_background is not None and not (args.image or args.images):
        raise GraphconvError("--skip-background looks for tissue in an image: give --image or --images")
    if args.mask and not args.image:
        raise GraphconvError("--mask marks the cells of one --image to compute" +
                             (" (a batch's images each have their own)" if args.images else ""))
    if args.mask and args.skip_background is not None:
        raise GraphconvError("--mask and --skip-background both choose the cells to compute: give one")
    if args.mask and (args.crops is not None or args.resize):
        raise GraphconvError("--mask stands over the image as stored: not with --crops or --resize")
    if args.compute_nodata and args.max_nodata is not None:
        raise GraphconvError("--compute-nodata computes every cell (--max-nodata 1): give one of the two")
    if (args.compute_nodata or args.max_nodata is not None or args.nodata is not None) and not (args.image or
                                                                                             args.images):
        raise GraphconvError("--nodata, --max-nodata and --compute-nodata say which pixels of an image are no-data "
                             "and which cells over them to compute: give --image or --images")


def _check_output_paths(args: argparse.Namespace) -> None:
    """Before the model loads: the files run writes can be written and overwrite none of
    its inputs."""
    _check_outputs_spare_the_inputs(args)
    _note_a_plain_map_named_ome(args.output)
    for path in filter(None, (args.output, args.heatmap_out)):
        if is_zarr_path(path):
            from graphconv.tiling import check_zarr_target
            check_zarr_target(path)
        else:
            check_writable(path)


def _check_outputs_for(args: argparse.Namespace, model) -> None:
    """With the model loaded: class names resolved, the heatmap's file named by its label,
    and nothing the run writes in the model's files or the user's that it would spoil."""
    resolve_class_names(args, model.graph.meta.get("labels"))
    if args.heatmap is not None and args.heatmap_out is None:  # a class named: its file is named by its label
        args.heatmap_out = _heatmap_path(args)
        _check_outputs_spare_the_inputs(args)
        check_writable(args.heatmap_out)
    spare_the_model(model, [("--output", args.output), ("--heatmap-out", args.heatmap_out)])
    if args.output and is_tiff_output(args.output):  # before the run, as a .zarr's writer is
        from graphconv.sources import require
        require("tifffile")
    _spare_the_users_files(args, model)
    check_heatmap_has_a_map(args, model)
    if args.heatmap not in (None, "top"):  # before the network runs, not after
        check_heatmap_class(args.heatmap, model.output_channels)


def _read_image(args: argparse.Namespace, model) -> tuple[np.ndarray, np.ndarray]:
    """--image read whole as a picture (not tiled): (the network's input, preprocessed;
    the picture a heatmap is drawn over)."""
    from graphconv import images
    from graphconv.images import stores_values
    for flag, given in (("--bands", args.bands), ("--heatmap-bands", args.heatmap_bands)):
        if given:
            raise GraphconvError(f"{flag} picks bands of a raster (a TIFF or a zarr array); this image is read "
                                 "as a picture (grey, RGB or RGBA)", file=args.image)
    if args.nodata is not None:
        from graphconv.sources import NODATA_OF_A_PICTURE
        raise GraphconvError(NODATA_OF_A_PICTURE, file=args.image)
    note_nodata_acts_on_nothing(args, None)
    stored = stores_values(model.graph.meta.get("preprocess"))
    picture = images.load_image(args.image, args.resize, channels=model.crop_shape[0], stored_values=stored)
    # after the read, which refuses what is no regular file (Pillow waits on a pipe for ever)
    note_value_scaling(model.graph.meta.get("preprocess"), None if stored else images.value_scaling(args.image))
    if images.eight_bit_picture(args.image):
        note_shallow_pixels(model.graph.meta.get("preprocess"))
    stored_bands = images.picture_bands(args.image)
    note_how_the_image_is_read(args.image, None if stored_bands is None else
                               images.channel_conversion(stored_bands, model.crop_shape[0], bands_flag=False))
    x = images.preprocess(picture, model.graph.meta.get("preprocess"))[None]
    if stored:
        picture = images.stretched(picture)  # what a heatmap is drawn over
    return x, picture


def _note_pixels_not_preprocessed(args: argparse.Namespace, model, x: np.ndarray) -> None:
    """--input takes the network's input, preprocessed; a .npy of raw 0..255 pixels for a
    model with a preprocess mapped nonsense without a word (`images.unpreprocessed_pixels`)."""
    from graphconv import images

    raw = images.unpreprocessed_pixels(x, model.graph.meta.get("preprocess"))
    if raw is not None:
        top, low, high = raw
        note(f"note: {os.path.basename(args.input)}'s values reach {top:g}, but the model's preprocess puts pixels "
             f"(0..255) in {low:.3g}..{high:.3g}: --input takes the network's input already preprocessed; "
             "--image reads a picture and preprocesses it")


def _read_array(args: argparse.Namespace) -> np.ndarray:
    """--input's array, as the .npy holds it."""
    x = load_npy(args.input)
    if args.resize:
        raise GraphconvError("--resize applies to --image only")
    return x


def _run_whole(args: argparse.Namespace, model, x: np.ndarray, picture: np.ndarray | None,
               margin: tuple[int, int]) -> int:
    """The network on the whole input at once (an array, or an image small enough), its
    map delivered as the options ask."""
    if model.returns_vectors:
        from graphconv.tiled_cli import check_the_network_takes
        check_the_network_takes(args, model, args.image or args.input, x.shape[2:])
    hint = "" if model.returns_vectors else SMALLER_THAN_A_CROP_HINT  # a classifier as written takes no --pad-image
    hint += RESIZE_HINT if hint and args.image else ""
    with _naming_the_input(args.image or args.input, hint):  # run's own check, naming the file
        model.check_memory(x.shape[0], x.shape[2:], file=args.image or args.input,
                           hint=lambda: _whole_run_hint(args, model, x.shape[0]))
    profile: dict[str, float] | None = {} if args.profile else None
    note_cold_kernels(model, args.device)
    for said in [] if args.full_map else model.size_notes(*x.shape[2:]):
        note(said)
    from graphconv.kernel_cache import compile_clock

    with compile_clock() as compiled:
        start = time.perf_counter()
        out = model.run(x, args.device, profile, full=args.full_map)
        seconds = time.perf_counter() - start
    print(f"output shape {tuple(out.shape)} in {seconds * 1e3:.1f} ms{compiling_said(compiled())}"
          f" on {model.executor(args.device).device}")
    _note_whole_image_vector(args, model, x, out)
    _note_overflow(out, args.image or args.input)
    if profile is not None:
        executor = model.executor(args.device)  # its graph carries the layouts the kernels ran in
        print(format_profile(executor.graph, profile, x.shape[2:], x.shape[0], executor.device))
        print("(the first run in a process also loads every compiled kernel; "
              "`graphconv inspect MODEL --profile` gives medians of warmed-up runs)")
    # each cell is drawn where it stands (`cell_area`: a classifier's crop, a segmentation network's pixel),
    # where the map's georeference and --skip-background put it too
    return _deliver(args, model, out, picture, shifted_cells(model.cell_area, margin))


def _note_overflow(out: np.ndarray, source: str) -> None:
    """Say so where a run on finite values (every input is checked) returns NaN or
    infinite scores: float32 overflowed inside the network (inputs near 3e38, or weights
    that blow up), and a map of NaN was written with exit 0 and no word."""
    bad = int(out.size - np.count_nonzero(np.isfinite(out)))
    if bad:
        note(f"note: {bad} of {counted(out.size, 'output value')} {agreeing(bad, 'is', 'are')} NaN or infinite: "
             f"float32 overflowed inside the network on {source} (check its values' range, and the model's "
             "preprocess)")


def _auto_chose_the_stride_method(model) -> bool:
    """Whether the last output-stride pass of the model's pipeline (--output-stride's, or
    one written into --passes) left the method to auto."""
    from graphconv.pass_manager import parse_pipeline

    chosen = [options.get("method", "auto") for name, options in parse_pipeline(model.graph.meta["compiled"]["passes"])
              if name == "output-stride"]
    return bool(chosen) and chosen[-1] == "auto"


def _whole_run_hint(args: argparse.Namespace, model, images: int) -> str:
    """What to do instead of a whole-image run over the memory limit: one image read with
    --image runs in tiles under it (an .npy cannot be read a tile at a time), a batch in
    smaller batches, and a shift-and-stitch model holds fy x fx shifted copies of the
    image where its dilated form holds one."""
    hints = []
    if images > 1:
        hints.append("run fewer images at a time")
    elif args.input:
        hints.append("run the image the array was made from with --image, which reads, preprocesses and runs it "
                     "in tiles under the limit (an --input array is the network's input, read whole: a TIFF or zarr "
                     "of it read with --image would be preprocessed a second time)")
    elif args.resize or args.full_map:
        hints.append(f"without {'--resize' if args.resize else '--full-map'} --image runs in tiles under the limit")
    copies = model.graph.find("shift_copies")
    if copies:
        fy, fx = copies[0].params["factor"]
        hints.append(f"this model runs {fy * fx} shifted copies of the image at once (shift-and-stitch); compiled "
                     f"with --stride-method dilate, where the network allows it, it runs one")
    return "; or ".join(hints)


@contextmanager
def _naming_the_input(file: str | None, hint: str = ""):
    """A shape error that names no file (an input smaller than the classifier's crop)
    names the input the user gave, and where it is smaller than a crop, says `hint`."""
    from graphconv.errors import Location, ShapeError, SmallerThanTheCrop

    try:
        yield
    except ShapeError as err:
        if err.loc is None and file:
            err.loc = Location(file)
        if hint and isinstance(err, SmallerThanTheCrop):
            err.message += hint
        raise


MAP_SUFFIXES = (".npy", ".zarr", ".tif", ".tiff")


def _check_outputs_spare_the_inputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, an --output or --heatmap-out that names the input (the
    run would replace the user's image or array with its result), and an --output named
    as a picture (it holds scores: .npy, .zarr or .tif; pictures are --heatmap-out's)."""
    from pathlib import Path

    from graphconv.files import check_name_fits
    inputs = {Path(p.rstrip("/")).resolve() for p in (args.image, args.input) if p}
    model = Path(args.model.rstrip("/")).resolve()
    outputs = [(flag, Path(path.rstrip("/")).resolve(), path)
               for flag, path in (("--output", args.output), ("--heatmap-out", args.heatmap_out)) if path]
    for flag, target, path in outputs:
        check_name_fits(path, flag)
        if target in inputs:
            raise GraphconvError(f"{flag} is the input {'image' if args.image else 'array'}; write it somewhere "
                                 "else", file=path)
        if target == model or model in target.parents:
            raise GraphconvError(f"{flag} would write into the model being run; write it somewhere else", file=path)
    if len(outputs) == 2 and outputs[0][1] == outputs[1][1]:
        raise GraphconvError("--output and --heatmap-out name the same file; give each its own", file=args.output)
    if args.output and Path(args.output).suffix.lower() in PICTURE_SUFFIXES:
        raise GraphconvError("--output writes the scores (.npy, .zarr, or .tif); a picture of them is "
                             "--heatmap CLASS --heatmap-out FILE", file=args.output)
    if args.output and Path(args.output).suffix.lower() in (".geojson", ".csv"):
        raise GraphconvError("--output writes the scores (.npy, .zarr, or .tif); for the cells as GeoJSON or "
                             "CSV write the map as .tif or .zarr, then: graphconv cells MAP.tif -o "
                             f"{shlex.quote(shown_path(args.output))}", file=args.output)
    if args.output and Path(args.output.rstrip("/")).suffix.lower() not in MAP_SUFFIXES:
        raise GraphconvError("--output writes the scores as .npy, .zarr or .tif: name it so (the name says "
                             "the format)", file=args.output)


def _note_a_plain_map_named_ome(output: str | None) -> None:
    """An --output named .ome.tif or .ome.zarr is written as any .tif or .zarr map, not
    as OME: a viewer reading the name for OME metadata (physical sizes, a pyramid) finds
    none, and the placement is where graphconv's maps keep it."""
    name = (output or "").rstrip("/").lower()
    if not name.endswith((".ome.tif", ".ome.tiff", ".ome.zarr")):
        return
    kind, where = ("zarr array", "attributes") if name.endswith(".zarr") else ("TIFF", "description")
    note(f"note: {shown_path(output)} is written as graphconv's maps are, a plain {kind} with its cells' placement "
         f"in its {where}, not as OME (no OME metadata, no pyramid); for QuPath, `graphconv cells` writes the "
         "cells in the slide's pixels as GeoJSON")


def _spare_the_users_files(args: argparse.Namespace, model) -> None:
    """Refuse, before any work, an --output or --heatmap-out that exists and is not what an
    earlier run wrote (`cluster.check_replaceable`, `images.is_graphconv_heatmap`):
    `--output scene.npy` or `--heatmap-out holiday.png` replaced the user's own file. An
    existing .npy is judged once the run knows the shape it writes (`_spare_the_users_npy`)."""
    from pathlib import Path

    from graphconv.cluster import check_replaceable
    from graphconv.images import is_graphconv_heatmap

    if args.output:
        check_replaceable(args.output, np.float32)
    if args.heatmap_out and Path(args.heatmap_out).exists() and not is_graphconv_heatmap(args.heatmap_out):
        raise GraphconvError("is already there and is not a heatmap graphconv drew: choose another name",
                             file=args.heatmap_out)


def _spare_the_users_npy(args: argparse.Namespace, model, grid, x: np.ndarray) -> None:
    """Refuse, before the network runs, an existing --output .npy that does not hold
    exactly what this run writes there (`cluster.check_replaceable`)."""
    from pathlib import Path

    if not args.output or is_tiff_output(args.output) or not Path(args.output).exists():
        return
    from graphconv.cluster import check_replaceable
    check_replaceable(args.output, np.float32, _output_shape(args, model, grid, x))


def _output_shape(args: argparse.Namespace, model, grid, x: np.ndarray) -> tuple[int, ...]:
    """The shape of what a whole-image run of (N, C, H, W) `x` writes to --output, from
    shapes alone: --scales' (N, K) vector, --crops' map, --full-map's whole output, or
    `Model.run`'s map (an uncompiled classifier's (N, K) vector)."""
    n, _, height, width = x.shape
    classes = model.output_channels
    if args.scales:
        return n, classes
    if args.crops is not None:
        return (n, classes, *grid.map_hw((height, width)))
    if args.full_map:
        from graphconv.shapes import infer_shapes
        return (n, *infer_shapes(model.graph, (height, width), check_weights=False)[model.graph.output.name])
    rows, cols = model.output_hw(height, width)
    return (n, classes) if model.returns_vectors and (rows, cols) == (1, 1) else (n, classes, rows, cols)


def check_heatmap_has_a_map(args: argparse.Namespace, model) -> None:
    """Refuse, before any work, --heatmap on a network that gives one class vector per
    image (a classifier as written, not compiled): it has no map to draw, and a 1-cell
    "map" of the pooled vector was drawn over the whole picture (or, with --images, the
    vector failed to draw after the run). --crops maps the classifier crop by crop."""
    from graphconv.images import ONE_SCORE_TOP, output_activation

    scored = len(args.classes) if getattr(args, "classes", None) else model.output_channels
    if args.heatmap == "top" and scored == 1 and getattr(args, "reduce", None) != "argmax":
        raise GraphconvError(f"--heatmap top: {model.graph.name} {ONE_SCORE_TOP}: draw its scores, --heatmap "
                             f"{args.classes[0] if getattr(args, 'classes', None) else 0}", file=args.model)
    if args.heatmap is not None and args.crops is None and model.returns_vectors:
        raise GraphconvError(f"--heatmap draws a map, and {model.graph.name} gives one class vector per image (a "
                             f"classifier as written): {ways_to_map(args, model, ' --heatmap ...')}", file=args.model)
    if args.heatmap == "top" and scored > 1 and output_activation(model.graph) == "sigmoid":
        note(f"note: {model.graph.name} ends in a sigmoid, each class a finding of its own: --heatmap top colours "
             "each cell by its highest-scoring class where that one's probability is at least 0.5, and leaves clear "
             "the cells calling none; a cell may call several: --heatmap CLASS draws one finding's probability")


def ways_to_map(args: argparse.Namespace, model, run_options: str = "") -> str:
    """How to get a classifier's map: compile it, or run it crop by crop with --crops;
    only the second for a network that cannot be compiled to slide (a squeeze-and-
    excitation gate, statistics of whole maps), which compiling tells, so it is tried."""
    from graphconv.compiler import compile_graph

    try:
        compile_graph(model.graph)
    except GraphconvError as err:
        where = f" (layer {shown(err.layer)}: graphconv compile says why)" if err.layer else ""
        return f"it cannot be compiled to slide{where}, so run it crop by crop with --crops"
    return (f"compile it (graphconv compile {args.model} -o DIR, then run DIR{run_options}), or run it crop by "
            "crop with --crops")


def note_how_the_image_is_read(image: str, converted: str | None) -> None:
    """Notes on what the network sees of one image, where it is not the pixels as stored:
    `converted`, what its bands become (`images.channel_conversion`: a grey model on an
    RGB image is fed luma), and a photo turned upright per its EXIF orientation (its map
    is the upright picture's, which a viewer that ignores EXIF shows turned)."""
    from graphconv.images import turned_upright

    if converted:
        note(f"note: the image is {converted}")
    if turned_upright(image):
        note("note: the picture is turned upright per its EXIF orientation before it is mapped (its map and cells "
             "are the upright picture's, as photo viewers show it)")


def settle_nodata_options(args: argparse.Namespace) -> None:
    """--compute-nodata and --max-nodata as the one number the run uses (`args.max_nodata`:
    1 with --compute-nodata, the default where neither is given), remembering whether
    either was given (`args.nodata_options_given`, for `note_nodata_acts_on_nothing`).
    Once: a second call changes nothing."""
    if hasattr(args, "nodata_options_given"):
        return
    args.nodata_options_given = args.compute_nodata or args.max_nodata is not None
    args.max_nodata = 1.0 if args.compute_nodata else DEFAULT_MAX_NODATA if args.max_nodata is None \
        else args.max_nodata


def nodata_flag(args: argparse.Namespace) -> str:
    """The no-data option given, as the notes name it: "--compute-nodata" or "--max-nodata F"."""
    return "--compute-nodata" if args.compute_nodata else f"--max-nodata {args.max_nodata:g}"


def note_nodata_acts_on_nothing(args: argparse.Namespace, source) -> None:
    """--max-nodata or --compute-nodata given for an image none of whose pixels can be
    no-data (no no-data value declared nor given with --nodata, and pixels that cannot be
    NaN; or a picture, `source` None) does nothing: a scene whose swath border is 0 but
    whose file says nothing was computed over the zeros. Say so, and how to name them.
    So does a --nodata its pixels cannot hold (-9999 in a uint16 raster), which also
    puts aside the file's own no-data value: its border was computed as data, silently."""
    raster = getattr(source, "inner", source)
    given = getattr(raster, "nodata_given", False)
    if not getattr(args, "nodata_options_given", False) and not given:
        return
    from graphconv.sources import nodata_can_occur

    if raster is not None and nodata_can_occur(raster):
        return
    if given:
        _note_unheld_nodata(raster)
        return
    flag = nodata_flag(args)
    if raster is None or not hasattr(raster, "array"):
        why = "the image is read as a picture, all of whose pixels are data"
    else:
        dtype = np.dtype(raster.array.dtype)
        value = getattr(raster, "missing_value", None)
        why = (f"its no-data value {value:g} is none of its {dtype} pixels' values" if value is not None else
               f"the image declares no no-data value (no GDAL no-data tag, no _FillValue) and its {dtype} pixels "
               "cannot be NaN") + (", so every pixel is data: give the value its no-data pixels hold with --nodata "
                                   "VALUE (--nodata 0 for a swath border of 0)")
    note(f"note: {flag} has nothing to act on: {why}")


def _note_unheld_nodata(raster) -> None:
    """`note_nodata_acts_on_nothing` for a --nodata value the raster's pixels cannot hold."""
    from graphconv.sources import held_integer

    dtype = np.dtype(raster.array.dtype)
    declared = getattr(raster, "declared_nodata", None)
    usable = declared is not None and declared != raster.nodata and held_integer(declared, dtype) is not None
    instead = (f"; the file's own no-data value, {declared:g}, is put aside by --nodata (leave --nodata out to use "
               "it)" if usable else "")
    note(f"note: --nodata {raster.nodata:g} has nothing to act on: it is none of the image's {dtype} pixels' "
         f"values, so every pixel is data and every cell is computed{instead}")


def note_how_the_raster_is_read(args: argparse.Namespace, source) -> None:
    """The notes on how a raster's pixels are read that a single --image's run (and
    verify --image) gives: --max-nodata with nothing to act on, pixels of more than 8
    bits scaled onto 0..255 (`note_value_scaling`), and for a .tif or .zarr map a zarr
    array's attributes that look like a georeference graphconv cannot read, or a TIFF's
    world file or RPCs."""
    from graphconv.sources import eight_bit, value_scaling

    note_nodata_acts_on_nothing(args, source)
    note_value_scaling(getattr(source, "preprocess", None), value_scaling(source))
    if eight_bit(source):
        note_shallow_pixels(getattr(source, "preprocess", None))
    output = getattr(args, "output", None)
    if is_tiff_output(output) or is_zarr_path(output):
        from graphconv.georef import unread_georeference_note, zarr_georeference_note
        path = getattr(getattr(source, "inner", source), "path", "")
        unread = zarr_georeference_note(path) or unread_georeference_note(path)
        if unread:
            note(unread)


def note_value_scaling(preprocess: dict | None, scaled: str | None, whose: str = "the image's") -> None:
    """A raster of more than 8 bits read through a spec without `values: stored`: its
    pixels were scaled onto 0..255 (16-bit / 257), so a reflectance scene's 200..4000 went
    in as 0.8..15.6 and its map is nonsense, silently. One note saying so and how to feed
    the stored values; where the spec's mean and std already look wrong for 0..255 pixels
    (`images.preprocess_scale_note`), that note, said of this image, instead. `whose`:
    whose pixels they were ("3 of 5 images'" for an --images batch)."""
    from graphconv.images import deep_scaling, preprocess_scale_note

    if not scaled:
        return
    plain, deep = preprocess_scale_note(preprocess), preprocess_scale_note(preprocess, scaled)
    if plain and deep != plain:
        if plain in _NOTES:
            _NOTES.remove(plain)
        note(deep)
        return
    scale = float((preprocess or {}).get("scale", 1.0))
    if scaled == deep_scaling("uint16") and abs(scale * 255 - 1) < 1e-4:  # /257, then /255: value / 65535
        note(f"note: {whose} {scaled}, as the spec's preprocess does not say `values: stored`, and its scale "
             f"{scale:.6g} (1/255) then makes them value / 65535, 0..1: right for a model trained on 16-bit images "
             "scaled to 0..1 (an X-ray's); for one trained on the values the file stores (reflectances, elevations), "
             "import the model with --values stored, or put `values: stored` in the spec's preprocess")
        return
    note(f"note: {whose} {scaled}, as the spec's preprocess does not say `values: stored` (the default for "
         "photos): to feed the values the file stores (reflectances, elevations), import the model with --values "
         "stored, or put `values: stored` in the spec's preprocess")


def note_shallow_pixels(preprocess: dict | None, whose: str = "the image's") -> None:
    """8-bit pixels taken as stored by a spec scaled for deeper values (`images.shallow_pixels_note`)."""
    from graphconv.images import shallow_pixels_note

    said = shallow_pixels_note(preprocess, whose)
    if said:
        note(said)


def note_pixels_as_they_are(args: argparse.Namespace, model, compiling: bool = False) -> None:
    """An ONNX file run straight on images says nothing of how its pixels were
    normalised (ONNX has no place for it), so they go in as 0..255: the right input for
    few PyTorch models, and the maps are then nonsense without a word. Say so, and how
    to state it, for the file, for a spec imported from it without a preprocess block
    (import notes it once; a review's runs of the spec said nothing after), and for a
    model compiled from either (`compiled: {source}`); a spec or an import that states a
    preprocess, or graphconv's own export (whose metadata keeps it), is not noted.
    `compiling`: compile cannot know how the model will be fed, so it says that it is
    images (--image) that go in as they are, not an --input array (given as it is)."""
    from graphconv.frontends.yaml import IMPORTED_FROM
    from graphconv.frontends import frontend_named
    from graphconv.model import own_input_scaling, unstated_preprocess_origin

    source = unstated_preprocess_origin(model.graph)
    if model.graph.meta.get("preprocess") is not None or source is None or own_input_scaling(model.graph):
        return
    kind = frontend_named(source)
    import_it = (f"import it with them (graphconv import MODEL{kind.suffixes[0]} -o NET.yaml --scale 0.00392157 --mean "
                 "... --std ..., and --values stored with the scale its training used for a raster stored in more than "
                 "8 bits, such as 16-bit reflectances)")
    no_place = f"({kind.a_file} has no place for one)"
    if frontend_named(args.model) is not None:
        said = f"{args.model} states no preprocess {no_place}"
        then = f"{import_it} and run NET.yaml"
    elif model.graph.meta.get("compiled"):
        said = f"{args.model} was compiled from {source}, which states no preprocess {no_place}"
        then = f"{import_it}, compile NET.yaml and run that"
    else:
        said = f"{args.model} was imported from {model.graph.meta[IMPORTED_FROM]} without a preprocess block"
        then = ("write one into the spec (preprocess: {scale: 0.00392157, mean: [...], std: [...]}) or " + import_it)
    fed = ("so images it runs on (--image) go in as they are, pixels 0..255 (an --input array goes in as given)"
           if compiling else "so the pixels go in as they are, 0..255")
    note(f"note: {said}, {fed}: if the model was trained on normalised pixels, {then}")


def note_dense_padding(args: argparse.Namespace, model) -> None:
    """A dense run of a network that pads: its cells can differ from the classifier on
    each crop, by enough to change the top class on real images (a padded ResNet-18 on a
    slide called every tissue cell background, silently). Said once per run, naming how
    to measure it on the user's image and how to get the exact map. The layers are
    traced on the compiled graph at its own stride (milliseconds, cached): a
    shift-and-stitch graph's copies trace no single grid, and the network without them
    pads where each copy does."""
    from graphconv.dense import crop_edge, edge_kinds, padded_layers
    from graphconv.strides import at_its_own_stride

    if args.crops is not None or model.segmentation or model.returns_vectors:
        return
    if model.stitch_copies == 1:
        _note_cells_off_the_lattice(model)
    graph = model.derived("at its own stride", lambda: at_its_own_stride(model.graph))
    padded = model.derived("padded_layers", lambda: padded_layers(graph))
    if not padded:
        return
    import shlex

    spec = shlex.quote(str(args.model))  # a compiled folder too: verify checks it as it was compiled
    image = shlex.quote(str(args.image)) if getattr(args, "image", None) else "IMAGE"
    verify = " ".join(["graphconv verify", spec, "--image", image, *_image_reading_given(args),
                       *_model_files_given(args)])
    kinds = edge_kinds(graph, padded)
    edges = crop_edge(kinds)
    where_this_pass_pads = ("at the image's and where each shifted copy is cut" if model.stitch_copies > 1
                            else "only at the image's")
    note(f"note: {model.graph.name} {_pads_in(kinds)}, so its "
         f"cells can differ from the classifier on each crop (each crop is {edges} at its own border, this pass "
         f"{where_this_pass_pads}): `{verify}` measures by how much on your image; --crops gives the exact crop "
         "loop (the classifier once per cell, far slower)")


def _pads_in(kinds: dict[str, str]) -> str:
    """'pads in 3 layers', naming the ceil_mode pools among them whose last window hangs
    off the map and the upsamples interpolating against its edge (`dense.edge_kinds`: a
    network padding nowhere was said to pad)."""
    from graphconv.dense import crop_edge, edge_asides

    layers = counted(len(kinds), "layer")
    edge = crop_edge(kinds)
    if edge == "cut":
        return f"hangs a ceil_mode pool's last window off the map in {layers}"
    if edge != "padded":
        return f"interpolates against the map's edge in {layers}"
    return f"pads in {layers}{edge_asides(kinds)}"


def _note_cells_off_the_lattice(model) -> None:
    message = model.cells_off_the_lattice_note()
    if message:
        note(message)


def note_run_as_written(args: argparse.Namespace, model) -> None:
    """--images with a classifier as written: each image gives one vector, pooled over
    all of it (as the single-image note says, `_note_whole_image_vector`), or, without a
    global pool, of images --resize brought to the crop's size."""
    if args.crops is not None or not model.returns_vectors:
        return
    _, height, width = model.crop_shape
    how = "pooled over the whole image" if model.graph.find("globalavgpool") else "each image the crop's size"
    note(f"note: {model.graph.name} is run as written: one vector per image, {how}. For its scores on every "
         f"{height}x{width} crop: {ways_to_map(args, model)}")


def _note_whole_image_vector(args: argparse.Namespace, model, x: np.ndarray, out: np.ndarray) -> None:
    """On an input larger than the crop, a classifier that was not compiled pools over all
    of it and returns one vector: what it was asked, but seldom what a user with a large
    image wants, so say how to get the map."""
    crop_hw = tuple(model.crop_shape[1:])
    if out.ndim != 2 or tuple(x.shape[2:]) == crop_hw:
        return
    note(f"note: {model.graph.name} is run as written: one vector per image, pooled over the whole "
         f"{x.shape[2]}x{x.shape[3]} input.{_same_padding_differs(model, x.shape[2:])} For its scores on every "
         f"{crop_hw[0]}x{crop_hw[1]} crop: {ways_to_map(args, model)}")


def _same_padding_differs(model, input_hw) -> str:
    """What an ONNX file's strided SAME padding means for a classifier run as written on
    another size: graphconv pads as for the crop, onnxruntime as for the input, so their
    vectors differ (13% on a 17x17 input of a 16x16 Keras classifier)."""
    from graphconv.frontends.onnx import SAME_PADDED_BY_SIZE

    layers = model.graph.meta.get(SAME_PADDED_BY_SIZE)
    if not layers:
        return ""
    named = ", ".join(layers[:3]) + (", ..." if len(layers) > 3 else "")
    return (f" Its {counted(len(layers), 'strided layer')} with SAME padding ({named}) are padded as for the "
            f"{model.crop_shape[1]}x{model.crop_shape[2]} crop, where ONNX pads for each input size: onnxruntime's "
            f"vector of this input can differ (for its own, read the file with --crop-size {input_hw[0]} "
            f"{input_hw[1]}).")


def _run_crops(args: argparse.Namespace, model, grid, x: np.ndarray, picture: np.ndarray | None,
               margin: tuple[int, int] = (0, 0)) -> int:
    """--crops on an image held whole: the classifier on every crop, batched; what a dense
    pass computes with shared work, and the only exact map of a network that cannot slide.
    (Lazily read, huge or tiled images stream through the tiled path instead.) `x` is
    padded by `margin` (top, left) where --pad-image padded it."""
    from graphconv.dense import crops_per_batch

    n, _, height, width = x.shape
    if height < grid.field.size[0] or width < grid.field.size[1]:
        raise GraphconvError(f"--crops: the input is {height}x{width}, smaller than the classifier's "
                             f"{grid.field.size[0]}x{grid.field.size[1]} crop", file=args.image or args.input)
    classifier = grid.model  # what runs on each crop: the network at its own stride (`CropGrid`)
    batch = crops_per_batch(classifier, grid.crops((height, width), n))
    check_run_fits(classifier.graph, batch, grid.field.size,
                   f"running {model.graph.name} on batches of {batch} crops", file=args.image or args.input)
    print(grid.describe((height, width), n))
    note_cold_kernels(classifier, args.device)
    from graphconv.kernel_cache import compile_clock

    with compile_clock() as compiled:
        start = time.perf_counter()
        out = grid.whole(x, args.device)
        seconds = time.perf_counter() - start
    print(f"output shape {tuple(out.shape)} in {seconds * 1e3:.1f} ms"
          f"{compiling_said(compiled())} on {model.executor(args.device).device}")
    return _deliver(args, model, out, picture, shifted_cells(grid.cell_area, margin))


def _deliver(args: argparse.Namespace, model, out: np.ndarray, picture: np.ndarray | None, cells) -> int:
    """A run's map, as asked: heatmap, top classes, the array (a .tif with where its
    `cells` stand, as the heatmap draws them); what cannot be written is refused before
    anything is."""
    map_file = args.output and (is_tiff_output(args.output) or is_zarr_path(args.output))
    if map_file and out.ndim != 4:
        raise GraphconvError(f"a .tif or .zarr output holds a map; this run gives a vector of shape "
                             f"{tuple(out.shape)}: write .npy", file=args.output)
    if args.heatmap is not None:
        write_heatmap(args, model, picture, out, cells)
    if args.top:
        print_top(class_scores(out, args.top_by), args.top, model.graph.meta.get("labels"), top_basis(out, args.top_by))
    if map_file:
        _write_map_file(args, model, out, cells)
        if args.image:  # a picture (a TIFF's map is tiled, and noted there): its world file, a JP2's boxes
            from graphconv.georef import unread_georeference_note
            unread = unread_georeference_note(args.image)
            if unread:
                note(unread)
    elif args.output:
        atomic_write(args.output, lambda p: np.save(p, out), suffix=".npy", size=out.nbytes)
    if out.ndim == 4:  # where each cell stands, as a tiled run says it (an .npy keeps no metadata to say it)
        print(f"cells: {_placement(args, cells).describe()}", file=sys.stderr)
    if args.output:
        print(f"-> {args.output}")
    elif args.heatmap is None and not args.top and not args.profile:  # a newcomer's first run kept nothing, unsaid
        drawn = ", --heatmap K draws it over the image" if args.image else ""
        note("note: the map was not saved: --output MAP.npy writes it (MAP.tif or MAP.zarr with where its cells "
             f"stand){drawn}, --top K prints its best classes")
    return 0


def _placement(args: argparse.Namespace, cells):
    """Where a whole-image run's `cells` stand on the image as stored (`georef.CellPlacement`):
    --resize's cells are in the resized image's pixels."""
    from graphconv import images
    from graphconv.georef import cells_on_pixels

    span = (1.0, 1.0)
    if args.image and args.resize:
        height, width = images.image_size(args.image)
        resized = images.resized_size(args.resize, args.image)
        span = (height / resized[0], width / resized[1])
    return cells_on_pixels(cells, span)


def _write_map_file(args: argparse.Namespace, model, out: np.ndarray, cells) -> None:
    """A whole-image run's map as a .tif or .zarr map, saying where its cells stand and
    what they hold, as a tiled run's (a .zarr was written as an .npy under that name)."""
    from dataclasses import replace

    from graphconv.georef import map_contents, read_settings
    from graphconv.tiling import WHOLE_IMAGE_PLAN, MapFile

    contents = {**map_contents(args.image or args.input, args.model, model), "tile_plan": WHOLE_IMAGE_PLAN}
    read = read_settings(resize=args.resize if args.image else None, pad_image=args.pad_image)
    placement = replace(_placement(args, cells), contents=contents, read=read)
    with MapFile(args.output, out.shape, out.dtype, chunk_hw=out.shape[2:], placement=placement) as written:
        written[:] = out


def _heatmap_path(args: argparse.Namespace) -> str | None:
    """Where --heatmap writes, checked before any work: --heatmap-out, else the map's
    <--output stem>-heatmap-<class>.png beside it (named after the image, two models'
    maps of one photo into one folder replaced each other's heatmap, unsaid), without
    --output <image stem>-heatmap-<class>.png in the current folder."""
    if args.heatmap is None:
        if (args.heatmap_out or args.heatmap_range != "auto" or args.heatmap_opacity is not None
                or args.heatmap_bands):
            raise GraphconvError("--heatmap-out, --heatmap-range, --heatmap-opacity and --heatmap-bands go with "
                                 "--heatmap CLASS")
        return None
    if args.images:
        if args.heatmap_out:
            raise GraphconvError("--images draws each image's heatmap beside its map (<name>-heatmap-<class>.png in "
                                 "--output-dir): drop --heatmap-out")
        return None
    if args.image is None:
        raise GraphconvError("--heatmap draws over an image: give --image or --images")
    from pathlib import Path
    from graphconv import images

    path = args.heatmap_out
    if not path:
        if isinstance(args.heatmap, str) and args.heatmap != "top":
            return None  # a class's name: the file is named once the labels have it (cmd_run)
        named_after = Path(args.output) if args.output else Path(Path(args.image).name)
        path = str(named_after.with_name(f"{named_after.stem}-heatmap-{heatmap_tag(args)}.png"))
    images.heatmap_format(path)
    return path


def write_heatmap(args: argparse.Namespace, model, picture: np.ndarray, out: np.ndarray, cells) -> None:
    """--heatmap: one class's map with a labelled colour bar, or the best class of each cell;
    `cells` (`Model.cell_area`) places each cell on the picture."""
    from graphconv import images

    scores = out.reshape(*out.shape[:2], 1, 1) if out.ndim == 2 else out
    display_hw = images.image_size(args.image) if args.resize else None  # undo --resize's stretch
    if args.heatmap == "top":
        best = images.best_class(scores[0], images.call_cut(model.graph, scores.shape[1]))
        draw_heatmap(args, model, picture, cells, best=best, display_hw=display_hw)
    else:
        check_heatmap_class(args.heatmap, scores.shape[1])
        draw_heatmap(args, model, picture, cells, one=scores[0, args.heatmap], display_hw=display_hw)


def check_heatmap_class(klass: int, classes: int) -> None:
    if klass >= classes:
        raise GraphconvError(f"--heatmap {klass}: the model has {classes} classes (0 to {classes - 1})")


def draw_heatmap(args: argparse.Namespace, model, picture: np.ndarray, field, *, one: np.ndarray | None = None,
                 best: np.ndarray | None = None, display_hw: tuple[int, int] | None = None, sample=None) -> None:
    """Draw and write --heatmap over `picture`: class args.heatmap's (rows, cols) scores
    `one`, or `best`, the (rows, cols) map of the best class of each cell; or, of a map
    too large to read whole, those of the cells `sample` (`images.MapSample`) says."""
    from pathlib import Path
    from graphconv import images

    drawn, what = images.drawn_heatmap(model, picture, field, args.heatmap, one=one, best=best,
                                       classes=getattr(args, "classes", None), value_range=args.heatmap_range,
                                       opacity=args.heatmap_opacity, display_hw=display_hw, sample=sample)
    fmt = images.heatmap_format(args.heatmap_out)
    atomic_write(args.heatmap_out, lambda p: images.save_picture(drawn, p, fmt, heatmap_settings(args)),
                 suffix=Path(args.heatmap_out).suffix)
    print(f"heatmap of {what} -> {args.heatmap_out}")
    if font_note := images.heatmap_font_note(drawn):  # said once, for a batch's heatmaps too
        note(f"note: {font_note}")


def heatmap_settings(args: argparse.Namespace) -> str:
    """The flags that change how a heatmap looks but not its file's name, as kept in it:
    a batch rerun with another --heatmap-range redraws the heatmaps of the maps it keeps,
    where their times alone said they were current."""
    import json

    return json.dumps({"range": args.heatmap_range, "opacity": args.heatmap_opacity,
                       "bands": getattr(args, "heatmap_bands", None)}, sort_keys=True)


def _heatmap_class(text: str) -> int | str:
    """'top', a class index, or a class's name (`resolve_class_names` looks it up)."""
    if text.strip().lower() == "top":
        return "top"
    return _class_index_or_name(text)


def _class_index_or_name(text: str) -> int | str:
    text = text.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return _natural_int(text)
    if not text:
        raise argparse.ArgumentTypeError("expected a class index or name")
    return text


def resolve_class_names(args: argparse.Namespace, labels: list[str] | None) -> None:
    """--heatmap and --classes as class indices, where the user named classes as the
    model's labels file does (`--heatmap tumour`): an exact name, else one that matches
    but for case. Done once the model is loaded, before any work."""
    if args.heatmap not in (None, "top"):
        typed = args.heatmap
        args.heatmap = class_index(args.heatmap, labels, "--heatmap")
        if isinstance(typed, str):
            args.heatmap_tag = file_name_part(labels[args.heatmap]) or str(args.heatmap)
    if args.classes:
        args.classes = [class_index(name, labels, "--classes") for name in rejoined_names(args.classes, labels)]
        if len(set(args.classes)) != len(args.classes):
            raise GraphconvError(f"--classes names a class twice: {','.join(map(str, args.classes))}")


def heatmap_tag(args: argparse.Namespace) -> str:
    """What a heatmap's file name says of its class: as --heatmap named it, 'top', the
    index, or the label (`--heatmap dog` draws photo-heatmap-dog.png, spelt as the labels
    file spells it)."""
    return getattr(args, "heatmap_tag", None) or str(args.heatmap)


def file_name_part(text: str, longest: int = 64) -> str:
    """`text` as part of a file name: runs of anything but letters, digits, '.', '-' and
    '_' become one '_' ('tabby, tabby cat' -> 'tabby_tabby_cat'), cut to `longest`."""
    return re.sub(r"[^\w.-]+", "_", text).strip("._")[:longest].strip("._")


def _heatmap_range(text: str) -> str | tuple[float, float]:
    if text in ("auto", "map"):
        return text
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, map or LOW,HIGH, got {shown(text)}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise argparse.ArgumentTypeError(f"expected finite numbers LOW < HIGH, got {shown(text)}")
    return low, high


def _opacity(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number more than 0 and at most 1, got {shown(text)}")
    return value


def _run_scales(args: argparse.Namespace, model, x: np.ndarray) -> int:
    from graphconv.scales import multiscale, scaled_size

    if args.heatmap is not None or args.profile:
        raise GraphconvError("--heatmap and --profile take a single-scale run (drop --scales)")
    if model.returns_vectors:  # it said "input of 28x37 does not fit" at the first scale
        raise GraphconvError("--scales slides the network over the image at each scale: compile the model first "
                             "(graphconv compile), a classifier with fc layers sees one crop", file=args.model)
    largest = scaled_size(x.shape[2], x.shape[3], max(args.scales))  # buffers grow to the largest
    check_run_fits(model.graph, x.shape[0], largest, f"scale {max(args.scales)} ({largest[0]}x{largest[1]})")
    reduce = args.reduce or "mean"
    note_cold_kernels(model, args.device)
    result = multiscale(model, x, args.scales, args.flip, reduce, args.device)
    for (scale, flipped), score_map in result.maps.items():
        print(f"scale {scale}{' flipped' if flipped else ''}: input resized to shorter side {scale}, "
              f"score map {score_map.shape[2]}x{score_map.shape[3]}")
    print(f"reduced ({reduce}) over {counted(len(result.maps), 'evaluation')} -> scores {result.scores.shape}")
    print_top(result.scores, args.top or 5, model.graph.meta.get("labels"), f" classes by the {reduce} score")
    if args.output:
        atomic_write(args.output, lambda p: np.save(p, result.scores), suffix=".npy", size=result.scores.nbytes)
        print(f"-> {args.output}")
    return 0


def _positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def _factor(text: str) -> float:
    """A scale factor of at least 1, whole ones as ints (`--downsample 2` averages blocks)."""
    value = _positive_float(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a factor of at least 1, got {shown(text)}")
    return int(value) if value == int(value) else value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {shown(text)}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {shown(text)}")
    return value


def _unit_interval(ends_included: bool):
    """A parser of a number in [0, 1] (--max-nodata, a share of a crop) or in (0, 1)
    (--skip-background's saturation, which neither end makes sense for)."""
    wanted = "from 0 to 1" if ends_included else "between 0 and 1"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {wanted}, got {shown(text)}") from None
        if not (0 <= value <= 1 if ends_included else 0 < value < 1):
            raise argparse.ArgumentTypeError(f"expected a number {wanted}, got {shown(text)}")
        return value
    return parse


_share, _fraction = _unit_interval(True), _unit_interval(False)


def _natural_int(text: str) -> int:
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {shown(text)}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {shown(text)}")
    return value


class _GivenOnce(argparse.Action):
    """An option that names what to read: given twice (`--images 'a/*.jpg' --images b`),
    argparse kept the last alone and the first was silently not mapped."""

    def __call__(self, parser, namespace, values, option_string=None):
        earlier = getattr(namespace, self.dest, None)
        if earlier is not None:
            raise argparse.ArgumentError(self, f"given twice ({earlier!r}, then {values!r}): give one (--images takes "
                                               "a folder or a glob such as 'photos/*.jpg'; one run per --image)")
        setattr(namespace, self.dest, values)


def _path(text: str) -> str:
    """A file or folder argument's value: an empty one (`--image ''`, an unset shell
    variable) was taken for the option left out, or crashed. A leading ~ is the home
    folder, quoted too (`--output '~/maps/x.npy'`, a path from a config file): taken
    literally, it made a folder named ~ in the current one, and said `-> ~/x.npy`."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    return os.path.expanduser(text) if text.startswith("~") else text


def _shard(text: str) -> tuple[int, int]:
    """--shard K/N: (K, N), K counting from 0, as job arrays number their tasks
    (--array=0-9): a K of N or more is refused, not taken for an empty part."""
    part, _, parts = text.partition("/")
    if not (part.strip().isdigit() and parts.strip().isdigit() and int(parts) > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not K/N (part K of N, say 0/10)")
    if int(part) >= int(parts):
        raise argparse.ArgumentTypeError(f"{text!r}: K counts from 0 to {int(parts) - 1} (with --array=1-{parts}, "
                                         f"give $((SLURM_ARRAY_TASK_ID - 1))/{parts})")
    return int(part), int(parts)


def _comma_list(text: str, convert, what: str, valid) -> list:
    """A comma-separated option value: each item converted, the whole list checked; an
    empty item (`1,,2`, a trailing comma) is refused, as a list with a value missing."""
    try:
        values = [convert(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {shown(text)}") from None
    if not values or not valid(values):
        raise argparse.ArgumentTypeError(f"expected {what}, got {shown(text)}")
    return values


def _class_list(text: str) -> list[int | str]:
    return _comma_list(text, _class_index_or_name, "distinct class indices >= 0 or class names",
                       lambda values: len(set(values)) == len(values))


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {shown(text)}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got '{text}'")
    return value


def _int_list(text: str) -> list[int]:
    return _comma_list(text, int, "positive integers", lambda values: min(values) >= 1)


def _heatmap_bands(text: str) -> list[int]:
    """--heatmap-bands: three bands (red, green, blue) or one (grey)."""
    bands = _int_list(text)
    if len(bands) not in (1, 3):
        raise argparse.ArgumentTypeError(f"{text!r}: three bands (red, green, blue: 4,3,2) or one (grey), not "
                                         f"{len(bands)}")
    return bands


def cmd_compile(args: argparse.Namespace) -> int:
    """Every check runs before the first byte is written: the output folder is checked
    before the pipeline runs, and the compiled model's receptive field (which rejects
    maps of different strides meeting) is worked out before it is saved."""
    from graphconv.compiler import compile_graph, compile_notes
    from graphconv.model import Model
    from graphconv.pass_manager import timings_table
    from graphconv.frontends import load_network as load_spec

    check_model_target(args.output)
    source = load_spec(args.spec, weights=args.weights, labels=args.labels, crop_size=args.crop_size,
                       task=args.task, activation=args.activation)
    from graphconv.model import check_labels
    check_labels(source, args.labels or args.spec)
    note_what_the_network_is(source)
    graph, records = compile_graph(source, args.passes, output_stride=args.output_stride,
                                   stride_method=args.stride_method, verify_each=not args.no_verify,
                                   print_ir_before=set(args.print_ir_before),
                                   print_ir_after=set(args.print_ir_after))
    model = Model(graph)
    note_pixels_as_they_are(argparse.Namespace(model=args.spec), model, compiling=True)
    note_plugin_passes_that_changed_nothing(records)
    field = model.field
    model.save(args.output)
    if args.timings:
        print(timings_table(records))
    done = f"compiled {args.spec} -> {args.output} ({model.graph.meta['compiled']['passes']}); "
    if model.returns_vectors:  # a pipeline without fc-to-conv: the network still takes only its crop
        print(done + f"it still returns one class vector per {model.crop_shape[1]}x{model.crop_shape[2]} crop "
                     "(an fc or flatten layer is left: add fc-to-conv and remove-flatten to --passes to make it "
                     "slide)")
        return 0
    method = model.graph.meta["compiled"].get("stride_method")  # which one auto took was not said
    how = (f" ({'shift-and-stitch' if method == 'shift' else 'dilated'}"
           f"{', as auto chose' if _auto_chose_the_stride_method(model) else ''})") if method else ""
    print(done + f"output stride {field.stride[0]}x{field.stride[1]}{how}, {_what_each_cell_is(model)}")
    for said in compile_notes(source, model.graph, args.output_stride):
        note(f"note: {said}")
    return 0


def _what_each_cell_is(model) -> str:
    """compile's words for a cell: a classifier's is the classifier on its crop (its
    receptive field, what `field` measures, is narrower where the edge pixels reach no
    output, wider where the network pads, and was read as the crop); a segmentation
    network's is the pixels its output pixel reads."""
    field = model.field
    reads = f"{field.size[0]}x{field.size[1]} pixels"
    if model.segmentation:
        return f"each cell reads {reads} (its receptive field)"
    crop = f"{model.cell_area.size[0]}x{model.cell_area.size[1]}"
    same = tuple(field.size) == tuple(model.cell_area.size)
    return f"each cell the classifier on a {crop} crop" + ("" if same else f" (its receptive field: {reads})")


def note_plugin_passes_that_changed_nothing(records) -> None:
    """A pass of the user's own that left the graph as it was, said: where it stands
    decides what it sees (after `default` the relus are fused into convs, and with
    --output-stride shift the output is the interleave), and "compiled" read as if it had
    done its work."""
    from graphconv.pass_manager import get_pass

    def may_have_missed(info) -> bool:  # a transform of the user's own (an analysis changes nothing by design)
        return not info.origin.startswith("built-in") and not info.analysis and not info.provides

    idle = [r.name for r in records if not r.modified and not r.automatic and may_have_missed(get_pass(r.name))]
    for name in dict.fromkeys(idle):
        note(f"note: pass '{name}' left the graph as it was (if it was to change it: where a pass stands "
             f"decides what it sees, `--print-ir-before {name}` shows the graph it got; a pass that only reads "
             "it, a report or a check, says so with @register_pass(..., analysis=True); docs/writing-passes.md)")


def cmd_inspect(args: argparse.Namespace) -> int:
    from graphconv.inspect_report import inspect_report

    if args.dot:
        check_writable(args.dot)
        _check_dot_replaceable(args.dot)
    args.profile = args.profile or args.against is not None
    model = load_model(args, args.model) if args.profile else load_model_for_table(args)
    hw = image_hw = _size_as_run_reads(args, model) or (tuple(args.input_size) if args.input_size else None)
    if hw is not None:  # the size the network runs the image at (padded, or its top-left part), and so is it shown
        for said in model.size_notes(*hw):
            note(said)
        hw = model.padded_hw(*hw) or model.trimmed_hw(*hw) or hw
    size = hw or model.crop_shape[1:]
    if args.profile:
        check_run_fits(model.graph, 1, size, f"profiling at {size[0]}x{size[1]}")
    plan = None
    if args.tile:  # first: a tile too small is one error, not an error below the whole table
        from graphconv.tiling import plan_report
        plan = plan_report(model, size, args.tile)
    print(inspect_report(model, hw, args.scales, image_hw))
    if plan:
        print(plan)
    if args.ir:
        print(model.graph)
    if args.dot:
        from graphconv.shapes import infer_shapes
        dot = model.graph.to_dot(infer_shapes(model.graph, check_weights=False))  # at the crop, as its input says
        from pathlib import Path
        atomic_write(args.dot, lambda path: Path(path).write_text(DOT_HEAD + dot, encoding="utf-8"), suffix=".dot")
        print(f"graph -> {args.dot} (dot -Tsvg {shlex.quote(args.dot)} -o graph.svg draws it)")
    if args.profile:
        c = model.crop_shape[0]
        x = np.random.default_rng(0).standard_normal((1, c, *size), dtype=np.float32)
        note_cold_kernels(model, args.device)
        model.run(x, args.device)  # warm-up: JIT compile and caches
        profile, runs = median_profile(model, x, args.device)
        executor = model.executor(args.device)  # its graph carries the layouts the kernels ran in
        from graphconv.threads import kernel_threads
        against = _run_against(args, model, x, executor.device, kernel_threads())
        threads = counted(kernel_threads(), "thread") if executor.device == "cpu" else executor.device
        print(f"per-layer times on random input of {size[0]}x{size[1]}: medians of {counted(runs, 'run')} after a "
              f"warm-up, on {threads} (--threads sets them; times of a machine other work loads are noise)")
        print(format_profile(executor.graph, profile, size, 1, executor.device, against))
        if against is not None:
            print("\n".join(against.summary()))
    return 0


def _run_against(args: argparse.Namespace, model, x: np.ndarray, device: str, threads: int):
    """onnxruntime beside graphconv on `x` (--against), or None without it."""
    if args.against is None:
        return None
    if device != "cpu":
        raise GraphconvError(f"--against onnxruntime runs onnxruntime's CPU provider: profile with --device cpu "
                             f"(this run is on {device})")
    from graphconv.against_onnxruntime import compare_with_onnxruntime
    return compare_with_onnxruntime(model, x, device, threads, args.model)


DOT_HEAD = "// the layers of a model, drawn by graphconv inspect --dot\n"


def _check_dot_replaceable(path: str) -> None:
    """An existing --dot file is replaced only where graphconv drew it (its first line
    says so): `--dot net.yaml` replaced the spec being inspected with the drawing."""
    if not os.path.lexists(path):
        return
    try:
        with open(path, encoding="utf-8", errors="replace") as fp:
            ours = fp.read(len(DOT_HEAD)) == DOT_HEAD
    except OSError:
        ours = False
    if not ours:
        raise GraphconvError("is already there and is not a graph graphconv drew: choose another name", file=path)


def _size_as_run_reads(args: argparse.Namespace, model) -> tuple[int, int] | None:
    """inspect --image: the (H, W) `run` would map of the image, read as the options say
    (what it prints of the level and pixel size included); None without --image."""
    if args.image is None:
        if args.level or args.downsample > 1 or args.mpp is not None or args.bands:
            raise GraphconvError("--level, --downsample, --mpp and --bands say how to read an --image")
        return None
    if args.input_size:
        raise GraphconvError("--image gives the input size: drop --input-size", file=args.image)
    check_image_reading_options(args)
    from graphconv.sources import open_source
    from graphconv.tiled_cli import describe_resolution

    source = open_source(args.image, model.crop_shape[0], model.graph.meta.get("preprocess"), args.level, args.bands,
                         args.downsample, args.mpp)
    describe_resolution(source, args.mpp)
    return source.height, source.width


VERIFY_REGION_CELLS = 16  # verify --image's default region, cells a side: 256 crops, 3-5 s for a ResNet-18 at 224


def cmd_verify(args: argparse.Namespace) -> int:
    from graphconv.compiler import compile_model
    from graphconv.dense import COMMAND_ASKED, NOTHING_TO_VERIFY_IN_SEGMENTATION, verify

    _check_verify_options(args)
    original = load_model(args, args.spec)
    if original.segmentation:  # before compiling it
        raise GraphconvError(NOTHING_TO_VERIFY_IN_SEGMENTATION, file=args.spec)
    compiled = compile_model(original.graph, args.passes, output_stride=args.output_stride,
                             stride_method=args.stride_method)
    if args.image is not None:
        return _verify_on_image(args, original, compiled)
    c = original.crop_shape[0]
    batch, seed = args.batch or 1, args.seed or 0
    _check_verify_fits(original, compiled, batch, tuple(args.input_size))
    image = np.random.default_rng(seed).standard_normal((batch, c, *args.input_size), dtype=np.float32)
    note_cold_kernels(compiled, args.device, original)
    report = verify(original, compiled, image, args.tolerance, args.device, strict=args.strict, where=None,
                    asked=COMMAND_ASKED)
    print(report)
    return 0 if report.passed else 1


def _check_verify_options(args: argparse.Namespace) -> None:
    """Each of verify's options belongs to random pixels or to --image: refused with the other."""
    if args.image is None:
        if args.region or args.level or args.downsample > 1 or args.mpp is not None or args.bands:
            raise GraphconvError("--region, --level, --downsample, --mpp and --bands say which pixels of an "
                                 "--image to check")
        if args.nodata is not None or args.max_nodata is not None or args.compute_nodata:
            raise GraphconvError("--nodata, --max-nodata and --compute-nodata say which pixels of an --image are "
                                 "no-data and which cells over them run computes")
        return
    if args.batch is not None or args.seed is not None:
        raise GraphconvError("--batch and --seed make random pixels; --image checks the image's own",
                             file=args.image)
    if args.region and (args.region[2] == 0 or args.region[3] == 0):
        raise GraphconvError("--region TOP LEFT HEIGHT WIDTH: the height and width must be at least 1",
                             file=args.image)
    check_image_reading_options(args)


def _check_verify_fits(original, compiled, batch: int, hw: tuple[int, int]) -> None:
    from graphconv.dense import crops_per_batch

    rows, cols = compiled.map_size(*hw)
    check_run_fits(compiled.graph, batch, hw, "the dense pass")
    crops = crops_per_batch(original, batch * rows * cols)
    check_run_fits(original.graph, crops, original.crop_shape[1:], "the crop loop")


def _verify_on_image(args: argparse.Namespace, original, compiled) -> int:
    """verify --image: the check on a region of a real image, read as `run` reads it. The
    dense map's cells come from a pass over the region with the pixels its cells' fields
    reach around it (as `run` computes them on the whole image); the crop loop, the
    costly part, runs over the region alone, with progress on stderr. The cells `run`
    leaves out for no-data (`background.cells_left_out`, --nodata, --max-nodata) are left
    out of the comparison too, and counted: on zeros the two agree, which says nothing."""
    from graphconv.dense import COMMAND_ASKED, verify
    from graphconv.sources import open_source
    from graphconv.tiled_cli import describe_resolution

    source = open_source(args.image, original.crop_shape[0], original.graph.meta.get("preprocess"), args.level,
                         args.bands, args.downsample, args.mpp, args.nodata)
    describe_resolution(source, args.mpp)
    _note_how_verify_reads(args, original, source)
    stride = _whole_stride(args, compiled)
    crop = original.crop_shape[1:]
    left_out = _cells_run_leaves_out(args, source, compiled)
    blank = None if left_out is None else left_out.nodata_cells()
    box, where = _verify_region(args, source, crop, stride, None if blank is None else _data_centre(blank, crop,
                                                                                                     stride))
    rows, cols = compiled.map_size(box[2] - box[0], box[3] - box[1])
    skip = None
    if blank is not None:
        top, left = box[0] // stride[0], box[1] // stride[1]
        skip = blank.box(top, top + rows, left, left + cols)
        if skip.all():
            raise GraphconvError(_no_data_in_region(args, source, where, blank, crop, stride, left_out),
                                 file=args.image)
    context = _with_context(box, compiled.field, crop, stride, (source.height, source.width))
    _check_verify_fits(original, compiled, 1, (context[2] - context[0], context[3] - context[1]))
    pixels = source.read(*context)[None]
    note_cold_kernels(compiled, args.device, original)
    i0, j0 = (box[0] - context[0]) // stride[0], (box[1] - context[1]) // stride[1]
    from graphconv.images import same_pixels

    as_compiled_reads_them = same_pixels(pixels, original.preprocess, compiled.preprocess)  # read with the classifier's
    dense = compiled.run(as_compiled_reads_them, args.device)[:, :, i0:i0 + rows, j0:j0 + cols]
    image = pixels[:, :, box[0] - context[0]:box[2] - context[0], box[1] - context[1]:box[3] - context[1]]
    whole = compiled.map_size(source.height, source.width)
    image_crops = whole[0] * whole[1] - (0 if blank is None else blank.count(0, whole[0], 0, whole[1]))
    why = None if skip is None or not skip.any() else (
        f"{int(skip.sum())} of the region's {skip.size} cells are left out of the comparison, as run leaves them "
        f"out: {_nodata_rule(left_out)}")
    with _crop_progress() as progress:
        report = verify(original, compiled, image, args.tolerance, args.device, strict=args.strict, dense=dense,
                        where=where, progress=progress, image_crops=image_crops, command=_crops_command(args),
                        left_out=skip if why else None, left_out_why=why, asked=COMMAND_ASKED)
    print(report)
    return 0 if report.passed else 1


def _note_how_verify_reads(args: argparse.Namespace, original, source) -> None:
    """run's notes on what the network sees of the image, for the same image read the same
    way: an ONNX file's pixels going in as they are, the bands' conversion, a TIFF mapped
    as stored, --max-nodata with nothing to act on."""
    from graphconv.cluster import stored_orientation_note
    from graphconv.sources import channel_conversion

    note_pixels_as_they_are(argparse.Namespace(model=args.spec), original)
    oriented = stored_orientation_note(source)
    if oriented:
        note(f"note: {oriented}")
    note_how_the_image_is_read(args.image, channel_conversion(source))
    settle_nodata_options(args)
    note_how_the_raster_is_read(args, source)


def _cells_run_leaves_out(args: argparse.Namespace, source, compiled):
    """The `background.Background` of the cells `run` leaves out of this image for no-data
    (the same rule, --nodata and --max-nodata as run's), or None where it leaves none out."""
    from graphconv.background import cells_left_out
    from graphconv.sources import nodata_can_occur
    from graphconv.tiling import DenseGrid

    settle_nodata_options(args)
    if not nodata_can_occur(source):
        return None
    return cells_left_out(source, DenseGrid(compiled), None, args.max_nodata)


def _refuse_a_batch_given_as_one_image(image: str) -> None:
    """--image of a folder of photos, or of a pattern, said only "it is a folder" or
    "image not found": name --images, which maps each of them. (A zarr array is a folder
    too, and a file's name may hold * or ?: those that are images are left alone.)"""
    batch = ("--images maps each image of a folder or a quoted pattern, a map each in --output-dir: "
             f"--images {shlex.quote(image)} --output-dir MAPS")
    zarr_marks = (".zarray", ".zgroup", "zarr.json")
    if os.path.isdir(image) and not is_zarr_path(image) and \
            not any(os.path.exists(os.path.join(image, mark)) for mark in zarr_marks):
        raise GraphconvError(f"cannot read image: it is a folder; {batch}", file=image)
    if not os.path.lexists(image) and any(char in image for char in "*?[") and glob.glob(image):
        raise GraphconvError(f"image not found: --image takes one image, and no pattern; {batch}", file=image)


def _nodata_rule(left_out) -> str:
    """Why run leaves a cell out, as its note says it."""
    from graphconv.sources import nodata_named
    value = nodata_named(left_out.image)
    return (f"more than {left_out.max_nodata:.0%} of each one's crop is no-data, the image's {value} "
            "(--max-nodata sets the share, --compute-nodata computes them all)")


def _data_centre(blank, crop: tuple[int, int], stride: tuple[int, int]) -> tuple[float, float] | None:
    """The pixel (y, x), in the pixels read, at the centre of the cell run computes
    (`blank`, `background.CellBlocks`, marks those it leaves out) nearest the centre of
    their bounding box: on the data even where the bounding box's own centre is not (a
    ring-shaped swath); None where it computes none."""
    bounds = blank.clear_bounds()
    if bounds is None:
        return None
    top, bottom, left, right = bounds
    nearest = blank.nearest_clear((top + bottom) / 2, (left + right) / 2)
    return tuple(float(cell * stride[a] + crop[a] / 2) for a, cell in enumerate(nearest))


def _no_data_in_region(args: argparse.Namespace, source, where: str, blank, crop, stride,
                       left_out) -> str:
    """verify --image's refusal of a region every cell of which run leaves out for no-data,
    with a region inside the data to check instead, where there is one."""
    from graphconv.sources import level0_span

    head = (f"every cell of the region ({where.split(':')[0]}) is left out by run for no-data "
            f"({_nodata_rule(left_out)}): the region holds no data to compare")
    bounds = blank.clear_bounds()
    if bounds is None:
        return head + "; nor does the rest of the image"
    top, bottom, left, right = bounds
    span = level0_span(source)
    box = [(top * stride[0], bottom * stride[0] + crop[0]), (left * stride[1], right * stride[1] + crop[1])]
    level0 = [(round(lo * span[a]), round(min(hi, (source.height, source.width)[a]) * span[a]))
              for a, (lo, hi) in enumerate(box)]
    centre = _data_centre(blank, crop, stride)
    side = [min(crop[a] + (VERIFY_REGION_CELLS - 1) * stride[a], box[a][1] - box[a][0]) for a in (0, 1)]
    top, left = (max(0, round((centre[a] - side[a] / 2) * span[a])) for a in (0, 1))
    return (f"{head}; the cells run computes lie in {_rows_and_columns(level0)} of level 0: give a --region "
            f"inside them, e.g. --region {top} {left} {round(side[0] * span[0])} {round(side[1] * span[1])} (or "
            "leave out --region: its default avoids the no-data)")


def _crops_command(args: argparse.Namespace) -> str:
    """`run --crops` on the image as verify read it: the map a warning points at."""
    import shlex

    reading = []
    if args.level:
        reading.append(f"--level {args.level}")
    if args.downsample > 1:
        reading.append(f"--downsample {args.downsample:g}")
    if args.mpp is not None:
        reading.append(f"--mpp {args.mpp:g}")
    if args.bands:
        reading.append("--bands " + ",".join(map(str, args.bands)))
    return " ".join(["graphconv run", shlex.quote(str(args.spec)), "--image", shlex.quote(str(args.image)),
                     *reading, *_model_files_given(args), "--crops"])


def _image_reading_given(args: argparse.Namespace) -> list[str]:
    """How the user had the image read (`_add_image_reading_options`, --nodata, --max-nodata),
    for a command graphconv suggests: verify without them checks another level (level 0
    at 0.25 µm where the map was made at --mpp 0.5)."""
    given = []
    for option, value, default in (("--level", "level", 0), ("--downsample", "downsample", 1), ("--mpp", "mpp", None),
                                   ("--nodata", "nodata", None), ("--max-nodata", "max_nodata", DEFAULT_MAX_NODATA)):
        value = getattr(args, value, default)
        if value not in (default, None):
            given += [option, f"{value:g}"]
    if getattr(args, "bands", None):
        given += ["--bands", ",".join(map(str, args.bands))]
    return given


def _model_files_given(args: argparse.Namespace) -> list[str]:
    """The model options the user gave (`_add_model_files_options`), shell-quoted, for a
    command graphconv suggests: without them it would run another model (seeded random
    weights in place of --weights trained.npz)."""
    import shlex

    given = []
    for option, value in (("--weights", getattr(args, "weights", None)), ("--labels", getattr(args, "labels", None)),
                          ("--task", getattr(args, "task", None)),
                          ("--activation", getattr(args, "activation", None))):
        if value is not None:
            given += [option, shlex.quote(str(value))]
    if getattr(args, "crop_size", None):
        given += ["--crop-size", *map(str, args.crop_size)]
    return given


def _whole_stride(args: argparse.Namespace, compiled) -> tuple[int, int]:
    stride = compiled.output_stride
    if any(int(s) != s for s in stride):
        raise GraphconvError(f"verify --image lines the crops up with the map's cells, {stride[0]}x{stride[1]} "
                             "pixels apart: that needs a whole stride (--output-stride)", file=args.image)
    return int(stride[0]), int(stride[1])


def _verify_region(args: argparse.Namespace, source, crop: tuple[int, int], stride: tuple[int, int],
                   data_centre: tuple[float, float] | None = None) -> tuple[tuple[int, int, int, int], str]:
    """(top, left, bottom, right) in the pixels read, and how the report names it: --region
    (level-0 pixels), grown to whole cells on `run`'s grid that cover it (its top and
    left down to a multiple of the stride, no further than run's last cell, its bottom
    and right out to a cell's edge within the image: a spot smaller than a crop grows to
    the crop, or few, starting at or just before it), so that each cell is one of run's;
    or VERIFY_REGION_CELLS a side at the image's centre, or at `data_centre` (the data
    cell nearest the centre of the data's bounding box, `_data_centre`: a scene's swath,
    which run's cells cover)."""
    from graphconv.sources import level0_span

    span = level0_span(source)
    size = (source.height, source.width)
    if size[0] < crop[0] or size[1] < crop[1]:
        raise GraphconvError(f"the image is {size[0]}x{size[1]} pixels as read, smaller than the classifier's "
                             f"{crop[0]}x{crop[1]} crop", file=args.image)
    if args.region:
        start, extent = _given_region(args, source, span)
        end = [start[a] + extent[a] for a in (0, 1)]
        last = [(size[a] - crop[a]) // stride[a] * stride[a] for a in (0, 1)]  # where run's last cell starts
        start = [min(start[a] // stride[a] * stride[a], last[a]) for a in (0, 1)]
        wanted = [max(1, -(-(end[a] - start[a] - crop[a]) // stride[a]) + 1) for a in (0, 1)]  # cells that cover it
        how = "--region, grown to whole cells of run's map"
    else:
        extent = [min(size[a], crop[a] + (VERIFY_REGION_CELLS - 1) * stride[a]) for a in (0, 1)]
        centre = data_centre or (size[0] / 2, size[1] / 2)
        start = [min(max(0, int(round(centre[a] - extent[a] / 2))), size[a] - extent[a]) for a in (0, 1)]
        start = [start[a] // stride[a] * stride[a] for a in (0, 1)]
        wanted = [(extent[a] - crop[a]) // stride[a] + 1 for a in (0, 1)]
        where = "the centre of the cells run computes (the data)" if data_centre else "the image's centre"
        how = (f"{VERIFY_REGION_CELLS}x{VERIFY_REGION_CELLS} cells at most around {where}; --region picks "
               "another, at the crop loop's cost of one classifier run per cell")
    cells = [max(1, min(wanted[a], (size[a] - start[a] - crop[a]) // stride[a] + 1)) for a in (0, 1)]
    end = [start[a] + crop[a] + (cells[a] - 1) * stride[a] for a in (0, 1)]
    level0 = [(round(start[a] * span[a]), round(end[a] * span[a])) for a in (0, 1)]
    where = f"{_rows_and_columns(level0)} of level 0, {cells[0]}x{cells[1]} cells: {how}"
    return (start[0], start[1], end[0], end[1]), where


def _rows_and_columns(spans) -> str:
    """'rows 10-41, columns 8-35' for the half-open spans [(10, 42), (8, 36)]: both ends
    named are inside (a half-open "10-42" read as 33 rows)."""
    (top, bottom), (left, right) = spans
    return f"rows {top}-{bottom - 1}, columns {left}-{right - 1}"


def _given_region(args: argparse.Namespace, source, span) -> tuple[list[int], list[int]]:
    """--region's start and extent in the pixels read, refused where it leaves the image."""
    top, left, height, width = args.region
    full = [round(n * s) for n, s in zip((source.height, source.width), span)]
    if top + height > full[0] or left + width > full[1]:
        inside = _rows_and_columns([(0, full[0]), (0, full[1])])
        raise GraphconvError(f"--region {top} {left} {height} {width} reaches outside the image, which is "
                             f"{full[0]}x{full[1]} pixels at level 0 ({inside})", file=args.image)
    start = [int(top / span[0]), int(left / span[1])]
    return start, [int((top + height) / span[0]) - start[0], int((left + width) / span[1]) - start[1]]


def _with_context(box, field, crop, stride, size) -> tuple[int, int, int, int]:
    """`box` grown by what the dense cells' fields read beyond their crops (the top and
    left by whole strides, so the cells stay on the grid), cut to the image: the dense
    pass then pads only where `run`'s whole-image pass does."""
    before = [-(-max(0, -field.offset[a]) // stride[a]) * stride[a] for a in (0, 1)]
    after = [max(0, field.offset[a] + field.size[a] - crop[a]) for a in (0, 1)]
    return (max(0, box[0] - before[0]), max(0, box[1] - before[1]),
            min(size[0], box[2] + after[0]), min(size[1], box[3] + after[1]))


@contextmanager
def _crop_progress(after: float = 2.0):
    """The crop loop's progress on stderr once it has run `after` seconds: one line
    rewritten on a terminal, else a line every 10 s."""
    start, shown = time.perf_counter(), [0.0]
    tty = sys.stderr.isatty()

    def progress(done: int, crops: int) -> None:
        now = time.perf_counter() - start
        if now < after or (not tty and now - shown[0] < 10 and done < crops):
            return
        shown[0] = now
        print(f"{chr(13) if tty else ''}crop loop: {done} of {crops} crops, {now:.0f} s", file=sys.stderr,
              end="" if tty else "\n", flush=True)

    yield progress
    if tty and shown[0]:
        print(file=sys.stderr)


def cmd_import(args: argparse.Namespace) -> int:
    """The spec is rendered before anything is written; the weights go beside it under
    the spec's name, so the pair moves together. What graphconv's own export stated (crop,
    preprocess, labels, task: `onnx_export.stated_metadata`) comes back; the options win."""
    from pathlib import Path

    from graphconv.frontends import frontend_for, frontends, load_network, refuse_foreign_model
    from graphconv.frontends.yaml import imported_spec_text, spec_text, weight_arrays

    frontend = frontend_for(args.model)
    if frontend is None:
        refuse_foreign_model(args.model)
        formats = "; ".join(f"{each.name}: {', '.join(each.suffixes)}" for each in frontends())
        raise GraphconvError(f"import reads models of other formats ({formats}); a spec is already a spec",
                             file=args.model)
    spec_path = Path(args.output)
    if spec_path.suffix.lower() not in (".yaml", ".yml"):
        raise GraphconvError("the spec to write must be named .yaml or .yml", file=args.output)
    weights_path = spec_path.with_suffix(".npz")
    for path in (spec_path, weights_path):
        check_writable(path)
    graph = load_network(args.model, crop_size=args.crop_size, labels=args.labels, init_missing_weights=False,
                         task=args.task, activation=args.activation)
    arrays = weight_arrays(graph)
    if not arrays:  # a front end whose file has none: the spec gets seeded ones on each load, as one written so
        weights_path = None
    labels_path = spec_path.with_suffix(".labels.txt") if "labels" in graph.meta else None
    _check_import_replaces_only_its_own(spec_path, [weights_path, labels_path], given=args.labels)
    graph.name = spec_path.stem
    preprocess = _with_own_input_scaling(graph, _preprocess_options(args, graph.input_shape[0]))
    if preprocess:
        graph.meta["preprocess"] = preprocess
    from graphconv.model import check_labels
    check_labels(graph, args.labels or args.model)
    note_what_the_network_is(graph)
    body = spec_text(graph, weights_file=weights_path.name if weights_path else None,
                     labels_file=labels_path.name if labels_path else "labels.txt").split("\n", 1)[1]
    text = imported_spec_text(Path(args.model).name, body)
    files = [(weights_path, lambda p: np.savez(p, **arrays), ".npz")] if weights_path else []
    if labels_path:
        labels_text = "\n".join(graph.meta["labels"]) + "\n"
        files.append((labels_path, lambda p: Path(p).write_text(labels_text), ".txt"))
    # the spec, which names the rest, is renamed into place last
    _write_all([(spec_path, lambda p: Path(p).write_text(text), ".yaml")] + files)
    print(f"imported {args.model} -> {spec_path} ({len(graph.layers())} layers)"
          + (f" + {weights_path}" if weights_path else ", no weights: they are seeded (random) on every load"))
    _note_logits(graph, args.model)
    if "preprocess" not in graph.meta:
        print(f"note: {frontend.name} files do not say how images were normalised; add a preprocess block to the spec "
              "(or pass --scale/--mean/--std, and --values stored for a raster stored in more than 8 bits, such as "
              "16-bit reflectances) before running it on images", file=sys.stderr)
    return 0


def _note_logits(graph, path: str) -> None:
    """An import of a model ending in raw scores says how to end it in its activation: a
    multi-label model exported as logits was taken for one class per cell (the heatmap's
    scale, the calls of cells, verify and --heatmap top) without a word."""
    from graphconv.images import output_activation

    if output_activation(graph) is None and graph.output.op != "log_softmax":
        print(f"note: {os.path.basename(path)} ends in raw scores (logits), no softmax or sigmoid: if it was trained "
              "with one (CrossEntropyLoss: softmax; BCEWithLogitsLoss, a multi-label model: sigmoid), --activation "
              "softmax|sigmoid ends the spec in it", file=sys.stderr)


def _check_import_replaces_only_its_own(spec_path, others: list, given: str | None = None) -> None:
    """An import may replace a spec only where an earlier import wrote it and nobody
    edited it since (its first line holds the digest of the rest: a spec is meant to be
    read and edited, and a new import would drop a preprocess block written in by
    hand), and the weights and labels beside it only where that spec names them (a
    user's own net.npz stays); the labels file `given` may be the one it writes
    (`--labels net.labels.txt`: rewritten with what it holds)."""
    from pathlib import Path

    from graphconv.frontends.yaml import IMPORTED, imported_unedited

    import yaml

    named: set[str] = set()
    if spec_path.exists():
        text = spec_path.read_text(errors="replace")
        header = IMPORTED.match(text)
        if not header or not imported_unedited(text):
            raise GraphconvError("exists, and is not a spec graphconv imported and nobody edited since: import to "
                                 "another name, or move it away first", file=str(spec_path))
        doc = yaml.safe_load(text[header.end():])
        named = {str(doc.get(key)) for key in ("weights", "labels") if isinstance(doc, dict) and doc.get(key)}
    spared = {Path(given).resolve()} if given else set()
    for path in filter(None, others):
        if path.exists() and path.name not in named and path.resolve() not in spared:
            raise GraphconvError(f"exists, and the import would replace it (it writes {spec_path.name}'s weights and "
                                 "labels beside it): import to another name, or move it away first", file=str(path))


def _write_all(files: list) -> None:
    """Write each (path, write(temporary path), suffix) as one: `files.atomic_write_all`,
    all to temporaries, then renamed into place together with Ctrl-C held back. One
    atomic write after another left a new weights file beside the old spec on a full
    disk, and on a Ctrl-C between two renames (the old spec, still 'imported, unedited',
    naming the new weights)."""
    from graphconv.files import atomic_write_all

    atomic_write_all(files)


def _with_own_input_scaling(graph, preprocess: dict) -> dict:
    """import's preprocess block, where the network scales its own pixels first
    (`own_input_scaling`: a Keras Rescaling layer, or caffe mode's mean) said so: without
    options it is `scale: 1` (so no run asks for a preprocess again); with --scale, a
    note of what scaling them first does."""
    from graphconv.model import own_input_scaling

    own = own_input_scaling(graph)
    if own is None:
        return preprocess
    first = "its first layer" if graph.input.users[0].name == own.layer else "after reordering its channels, its layer"
    if own.mean:
        said = (f"the network normalises its pixels itself: {first} {own.layer} subtracts a mean of "
                f"{', '.join(f'{v:.6g}' for v in own.mean)} (pixel units, 0..255)")
    else:
        low, high = min(own.factors), max(own.factors)
        factors = f"{low:.6g}" if math.isclose(low, high, rel_tol=1e-6) else f"{low:.3g} to {high:.3g} (per channel)"
        shifted = any(own.shifts)
        said = (f"the network scales its pixels itself: {first} {own.layer} multiplies them by {factors}"
                + (f" and shifts them, taking 0..255 onto {own.onto[0]:.3g}..{own.onto[1]:.3g}" if shifted else ""))
    scale = float(preprocess.get("scale", 1.0))
    normalised = [f"--{key}" for key in ("mean", "std") if key in preprocess]
    if (scale != 1.0 or normalised) and preprocess.get("values") != "stored":
        if normalised:
            given = (["--scale"] if scale != 1.0 else []) + normalised
            done = (f"{' and '.join(given) if len(given) < 3 else '--scale, --mean and --std'} "
                    f"{'normalises' if len(given) == 1 else 'normalise'} them before it does: twice")
        elif own.mean:
            done = f"--scale {scale:g} scales them onto 0..{255 * scale:.3g} before it takes that mean off"
        else:
            done = f"--scale {scale:g} scales them before it: twice, onto 0..{255 * scale * own.factor:.3g}"
        note(f"note: {said}, and {done}; leave out --scale, --mean and --std if it was trained on pixels in "
             "0..255, as such a layer says it was")
    elif not preprocess:
        note(f"note: {said}, so it takes pixels in 0..255 as they are; the spec states preprocess "
             "{scale: 1} (give --mean/--std only if training normalised them further)")
        return {"scale": 1.0}
    return preprocess


def _preprocess_options(args: argparse.Namespace, channels: int) -> dict:
    """import's --scale/--mean/--std as a spec's preprocess block, checked as the spec
    loader checks one (finite numbers, one per channel, no zero std); one number given
    is written out for every channel."""
    block: dict = {}
    if args.values == "stored":
        block["values"] = "stored"
    if args.scale is not None:
        if not math.isfinite(args.scale):
            raise GraphconvError(f"--scale must be a finite number, got {args.scale}")
        block["scale"] = args.scale
    for key in ("mean", "std"):
        values = getattr(args, key)
        if values is None:
            continue
        if len(values) == 1:
            values = values * channels  # one number for every channel, as for a grey or multi-band input
        if len(values) != channels:
            raise GraphconvError(f"--{key} gives {counted(len(values), 'number')}; the model's input has "
                                 f"{counted(channels, 'channel')}: give one number per channel, or one for all")
        if key == "std" and any(v == 0 for v in values):
            raise GraphconvError("--std must not contain 0")
        block[key] = values
    return block


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {shown(text)}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
    return value


def _float_list(text: str) -> list[float]:
    return _comma_list(text, float, "finite numbers", lambda values: all(math.isfinite(v) for v in values))


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from graphconv.errors import Location
    from graphconv.frontends.onnx_export import ExportOptions, declared_dims, export_model

    if args.output == "-":
        raise GraphconvError("-o -: export writes a file, not standard output; give its name (FCN.onnx)")
    if Path(args.output).resolve() == Path(args.model.rstrip("/")).resolve():
        raise GraphconvError("-o is the model being exported; write the export somewhere else", file=args.output)
    if Path(args.output).suffix.lower() != ".onnx":
        raise GraphconvError("export writes ONNX: name the file .onnx (the name says the format; "
                             "`graphconv compile` writes the model as a spec)", file=args.output)
    check_writable(args.output)
    model = load_model(args, args.model)
    options = ExportOptions(input_size=tuple(args.input_size) if args.input_size else None, batch=args.batch,
                            pixels=args.pixels, argmax=args.argmax)
    try:
        notes = export_model(model, args.output, flag="-o", options=options)
    except GraphconvError as err:  # an option the model cannot take (--input-size, --pixels): named by the model
        err.loc = err.loc or Location(str(args.model))
        raise
    for text in notes:
        note(text)
    if "compiled" not in model.graph.meta and not model.segmentation:  # a segmentation network is dense as written
        note(f"note: {args.model} is not compiled; exported the network as written (graphconv "
             "compile it first for the fully convolutional network)")
    in_dims, out_dims = declared_dims(model.graph, options)
    pixels = " uint8 pixels" if options.pixels else ""
    classes = f", and top classes {' x '.join(map(str, [out_dims[0], *out_dims[2:]]))}" if options.argmax else ""
    print(printable(f"exported {args.model} -> {args.output} (ONNX op set 19; input{pixels} "
                    f"{' x '.join(map(str, in_dims))}, output {' x '.join(map(str, out_dims))}{classes})"))
    return 0


def cmd_cells(args: argparse.Namespace) -> int:
    from graphconv.cells import write_cells
    from graphconv.errors import Location

    if args.output == "-":
        raise GraphconvError("-o -: cells writes a file, not standard output; give its name (cells.geojson)")
    try:
        result = write_cells(args.map, args.output, top_classes=args.top_class, min_score=args.min_score,
                             regions=args.regions)
    except GraphconvError as err:  # a class the map does not have: named by the map
        err.loc = err.loc or Location(str(args.map))
        raise
    for text in result.notes:
        note(text)
    if not result.written and result.computed:
        note(f"note: none of the {result.computed} computed cells has a best class and score as asked "
             "(--top-class, --min-score): the file holds no cells")
    merged = "" if result.regions is None else (
        f" in {counted(result.regions, 'region')} of {counted(result.classes, 'class', 'classes')}")
    print(printable(f"{result.written} of {result.computed} computed cells of {args.map}{merged} -> {args.output} "
                    f"(coordinates: {result.coordinates})"))
    return 0


def cmd_passes(args: argparse.Namespace) -> int:
    from graphconv.pass_manager import ENTRY_POINT_GROUP, describe_options, registered_passes

    infos = registered_passes()
    width = max(len(p.name) for p in infos)
    for info in infos:
        extra = ["analysis: changes nothing"] if info.analysis else []
        if info.requires:
            extra.append("needs " + ",".join(info.requires))
        if info.options:
            extra.append("options " + describe_options(info, separator=","))
        suffix = f" [{'; '.join(extra)}]" if extra else ""
        print(f"{info.name:<{width}}  {info.description}{suffix}  -- {info.origin}")
    print(f"(passes of installed packages that declare a '{ENTRY_POINT_GROUP}' entry point are "
          "imported on every graphconv run, like --plugin: install only packages you trust)")
    return 0


def cmd_ops(args: argparse.Namespace) -> int:
    from graphconv.op_listing import describe_op, op_line
    from graphconv.ops.registry import get_op, user_ops

    if args.op is not None:
        print(describe_op(get_op(args.op)))
        return 0
    names = user_ops()
    for name in names:
        print(op_line(get_op(name), max(map(len, names))))
    print("(graphconv ops OP: an op's params, weights and kernels; docs/spec-files.md has examples)")
    return 0


if __name__ == "__main__":
    # `python -m graphconv.cli`: this file runs as __main__, a second copy of the module
    # beside graphconv.cli, which the other modules import (and whose _NOTES their
    # note() calls fill): run the real one.
    from graphconv.cli import console_main as _console_main
    sys.exit(_console_main())
