"""Tiles and images on a Dask cluster: the same tile plan, the same result, more machines.

`graphconv run MODEL --image BIG --tile N --workers 4` starts a `LocalCluster` on this
machine (the embedded default); `--scheduler tcp://host:port` uses a running cluster
instead. The client plans the tiles (graphconv.tiling) and writes the map; each worker
loads the model once (from the same path, so the files must be reachable from the
workers), reads its tile's input box itself, and sends back only its block of scores.
Many images (`--images 'photos/*.jpg' --output-dir maps/`) go one task per image, each
written by its worker; a failed image is reported and the others are kept.

Dask (`dask[distributed]`) is the optional `scale` extra.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterator, Sequence

import numpy as np

from graphconv.background import DEFAULT_MAX_NODATA
from graphconv.classes import class_scores
from graphconv.errors import GraphconvError, GraphconvWarning, SmallerThanTheCrop, counted, user_message
from graphconv.georef import is_zarr_path

if TYPE_CHECKING:
    from graphconv.georef import CellPlacement
    from graphconv.tiling import DamagedCells


@dataclass(frozen=True)
class ModelRef:
    """How a worker loads the model: what `Model.load` was given."""

    path: str
    weights: str | None = None
    labels: str | None = None
    crop_size: tuple[int, int] | None = None
    task: str | None = None
    activation: str | None = None

    def load(self):
        """The model. A worker's GraphconvWarnings are turned off for good, not around the
        load (`warnings.catch_warnings`, which puts the filters back, is not thread-safe,
        and workers load in threads): the command has said them as notes."""
        from graphconv.model import Model
        warnings.filterwarnings("ignore", category=GraphconvWarning)
        return Model.load(self.path, weights=self.weights, labels=self.labels, crop_size=self.crop_size,
                          task=self.task, activation=self.activation)


@dataclass(frozen=True)
class MapOptions:
    """What each tile's block goes through before it is sent back (graphconv.tiling.map_transform)."""

    reduce: str | None = None
    classes: tuple[int, ...] | None = None
    device: str = "cpu"
    crops: tuple[int, int] | None = None  # --crops STRIDE: the classifier on every crop (tiling.CropGrid)
    level: int = 0  # --level K: the level of a TIFF pyramid each image is read at
    skip_background: float | None = None  # --skip-background S: tiles without tissue not computed (background.py)
    bands: tuple[int, ...] | None = None  # --bands: a raster's bands the network takes (graphconv.sources)
    downsample: float = 1  # --downsample F: each image read F times coarser (sources.Downsampled)
    mpp: float | None = None  # --mpp UM: each slide read at that pixel size (sources.resolution_for)
    traceback: bool = False  # --traceback: an image's error is raised with its traceback, not returned as one line
    max_nodata: float = DEFAULT_MAX_NODATA  # --max-nodata F: cells more of whose crop is no-data not computed
    nodata: float | None = None  # --nodata VALUE: each raster's no-data value, in place of its file's
    memory_limit: int | None = None  # bytes an image's run may take (`image_tile`); None: the process's own budget
    resume: bool = False  # --images --resume: each tiled map written into a partial map kept if stopped (_map_in_tiles)
    resize: tuple[int, ...] | None = None  # --resize H W, or S: each picture resized (sources.PillowSource)
    mask: str | None = None  # --mask MASK: the cells of one --image it marks computed (background.load_mask)
    pad_image: str | None = None  # --pad-image MODE: each image with a border, cells to its edges (sources.Bordered)
    listed_in: str | None = None  # --images --skip-existing/--resume: the --output-dir whose list tells a map that
    # another run made meanwhile, kept and not made again (`_made_meanwhile`)
    top: int | None = None  # --images --top K: each map's K best classes, ranked where it was made (`ranked_classes`)
    top_by: str | None = None  # --top-by: by their mean over the map's computed cells (None), or their best cell's
    scales: tuple[int, ...] | None = None  # --scales: each picture's class vector over these shorter sides (`_at_scales`)
    flip: bool = False  # --flip: with --scales, the mirror images too
    scales_reduce: str = "mean"  # --reduce mean|max with --scales: over each map's positions, then over the maps
    skip_damaged: bool = False  # --skip-damaged: cells whose crops reach an undecodable TIFF tile left out
    wait_for_other_runs: bool = False  # --images --resume: a partial map another run writes waited for (`_map_each`)

    def grid(self, model):
        """What each task maps: the model's dense pass, or the classifier on every crop."""
        from graphconv.tiling import CropGrid, DenseGrid
        return CropGrid(model, self.crops) if self.crops else DenseGrid(model)

    def open_image(self, model, image: str, nodata: float | None = None):
        """The source a task reads `image` through: at these --level, --bands,
        --downsample (or --mpp), --resize and --pad-image; `nodata` in place of the
        file's no-data value, where given."""
        from graphconv.sources import open_source, padded_image

        source = open_source(image, model.crop_shape[0], model.graph.meta.get("preprocess"), self.level, self.bands,
                             self.downsample, self.mpp, nodata, self.resize, self.skip_damaged)
        return padded_image(source, self.pad_image, self.grid(model).cell_area)


_WORKER_MODELS: dict[ModelRef, tuple[tuple, tuple, Any]] = {}  # (files read, their times, the model)
_WORKER_SOURCES: dict[tuple, Any] = {}  # the image a worker's tiles come from (`_model_and_source_key`)
WORKER_MODELS_KEPT = 2  # models a long-lived worker keeps loaded: the last ones it ran


_WORKER_CACHE_LOCK = threading.Lock()  # a worker of several threads loads and evicts one model at a time


def worker_model(ref: ModelRef):
    """One Model per process (a Dask worker's, or the command's own), loaded on its first
    task and loaded again only when a file it was read from has changed since: a notebook
    that retrains and maps again gets the new weights."""
    with _WORKER_CACHE_LOCK:
        return _loaded(ref)[2]


def _loaded(ref: ModelRef) -> tuple[tuple, tuple, Any]:
    """`_WORKER_MODELS[ref]`, loaded (again) where needed; the caller holds the lock."""
    cached = _WORKER_MODELS.get(ref)
    files = cached[0] if cached is not None else (ref.path,)
    before = _files_stamp(files)
    if cached is None or before != cached[1]:
        from graphconv.process import configure_process
        configure_process()
        model = ref.load()
        read = (ref.path, *model.graph.meta.get("read_from", ()))
        # the files' stamps from before the load where they are known: one replaced while it
        # loaded then differs next time, and the model is loaded again
        _WORKER_MODELS.pop(ref, None)
        while len(_WORKER_MODELS) >= WORKER_MODELS_KEPT:  # a cluster's worker outlives runs of many models
            del _WORKER_MODELS[next(iter(_WORKER_MODELS))]
        _WORKER_MODELS[ref] = (read, before if read == files else _files_stamp(read), model)
    else:
        _WORKER_MODELS[ref] = _WORKER_MODELS.pop(ref)  # the most recently run last: the first is evicted
    return _WORKER_MODELS[ref]


def _model_and_source_key(ref: ModelRef, image: str, options: MapOptions) -> tuple[Any, tuple]:
    """The model, and what a worker's open image stands for: the model as loaded (its
    files' stamps: its channels and preprocess), the image file as it is now (its
    stamp) and every option that changes what is read from it. A cluster's worker
    outlives the command: keyed by path alone, a run with other --bands, --downsample or
    --level, of an image replaced at the same path, or of a model compiled again with
    another preprocess got the previous run's pixels, its map wrong without a word."""
    from graphconv.files import file_stamp

    with _WORKER_CACHE_LOCK:
        _, model_stamp, model = _loaded(ref)
    read = (options.level, options.bands, options.downsample, options.mpp, options.nodata, options.resize,
            options.pad_image)
    return model, (ref, model_stamp, image, tuple(file_stamp(image) or ()), read)


def _files_stamp(files) -> tuple:
    """Each file's `files.file_stamp`, to compare with the next call's."""
    from graphconv.files import file_stamp
    return tuple(tuple(file_stamp(path) or ()) for path in files)


WORKER_PROCESS_BYTES = 200 << 20  # a worker process's Python, numba and LLVM, as graphconv's own run measures them


@contextmanager
def client_for(workers: int | None, scheduler: str | None, threads: int | None = None) -> Iterator[Any]:
    """A dask.distributed Client, as a context manager: a running cluster at `scheduler`,
    or a LocalCluster of `workers` processes sharing this machine's cores (numba threads
    split between them, or `threads` each: --threads), closed on the way out with its
    scratch folder.

    The local workers ignore SIGINT (set while they are spawned, so they inherit it from
    their first instruction on): Ctrl-C at a terminal reaches the whole process group,
    and each worker, interrupted in its event loop, printed its KeyboardInterrupt and
    CancelledError tracebacks after the command's one line. Here only the command is
    interrupted; leaving this block closes the cluster, which stops its workers. Their
    scratch space (dask's dask-scratch-space, in the system's temporary folder unless
    told) goes in a temporary folder of this run's, removed when the cluster is closed."""
    from graphconv.sources import require
    distributed = require("distributed")
    if scheduler:
        with _running_cluster_client(distributed, scheduler) as client:
            yield client
        return
    with _local_cluster_client(distributed, workers, threads) as client:
        yield client


@contextmanager
def _running_cluster_client(distributed, scheduler: str) -> Iterator[Any]:
    """`client_for` a --scheduler: the cluster checked before any task is sent (it answers,
    it has a worker, its workers run the same code), so a wrong address or an empty
    cluster is one line, not a hang, as are workers of another graphconv, numpy or numba;
    and a worker killed or the scheduler lost during the run said as one line that says
    what to do, not as dask's tracebacks."""
    import concurrent.futures

    from distributed.comm.core import CommClosedError

    _check_a_scheduler_answers(scheduler)
    _quiet_lost_result_logs()
    client = _scheduler_s_client(distributed, scheduler)
    with client:
        _wait_for_a_worker(client, scheduler)
        _check_worker_versions(client, scheduler)
        try:
            yield client
        except distributed.KilledWorker as err:
            raise GraphconvError(f"a Dask worker of {scheduler} died running this run's tasks, and so did "
                                 f"those that took them over ({err.task!r}): most often a worker killed for "
                                 "memory; give the workers more, or tiles that need less (--memory-limit, the "
                                 "budget each tile is chosen for, or a smaller --tile)") from None
        except (CommClosedError, concurrent.futures.CancelledError) as err:
            # "in <TCP (closed) ConnectionPool.gather ...>: Stream is closed", or the tasks cancelled
            # with reason "scheduler-connection-lost" where the scheduler was killed
            raise GraphconvError(f"lost the Dask scheduler at {scheduler} during the run ({_why_lost(err)}): a "
                                 "map written with --resume keeps its tiles done for the same command to go on "
                                 "from") from None


def _scheduler_s_client(distributed, scheduler: str):
    """A client connected to `scheduler`; an address dask cannot use said as one line."""
    try:
        return distributed.Client(scheduler, timeout=f"{SCHEDULER_ANSWER_S}s")
    except (OSError, ValueError, TypeError) as err:  # ValueError: an address dask cannot parse ("host", no
        # port); TypeError: tls:// without the TLS settings dask's config must give it
        raise GraphconvError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None


@contextmanager
def _local_cluster_client(distributed, workers: int, threads: int | None) -> Iterator[Any]:
    """`client_for` --workers: a LocalCluster of this run's own, its scratch folder removed
    and the cluster closed on the way out, and silent while it closes after a stop (what
    it says then is dask's shutdown, not anything for the user)."""
    from graphconv.files import scratch_folder

    env = _workers_environment(workers, threads)
    scratch = str(scratch_folder("dask"))
    try:
        cluster = _started_local_cluster(distributed, workers, env, scratch)
        logging_before = logging.root.manager.disable
        try:
            with distributed.Client(cluster) as client:
                try:
                    yield client
                except BaseException:
                    # Stopped (Ctrl-C, SIGTERM, an error) with tasks in flight, the scheduler, closing, logged
                    # "Closed comm <BatchedSend: closed> while trying to write" at CRITICAL with a 40 KB list
                    # of its tasks and CommClosedError tracebacks (3 stops in 8, a review), from its own
                    # thread, before the command's one line. This cluster is the run's own and stopping:
                    # nothing it says now is for the user, so logging is off until it is closed.
                    logging.disable(logging.CRITICAL)
                    raise
        finally:
            try:
                cluster.close()
            finally:
                logging.disable(logging_before)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _workers_environment(workers: int, threads: int | None) -> dict[str, str]:
    """The local workers' environment: their share of the cores as NUMBA_NUM_THREADS, once
    --workers is checked to fit in memory before any process starts."""
    from graphconv.memory import check_fits
    from graphconv.threads import threads_chosen_by_user, usable_cores

    cores = usable_cores()
    check_fits(workers * WORKER_PROCESS_BYTES, f"--workers {workers} (a process each, before any model or tile)",
               hint=f"give fewer: this run may use {counted(cores, 'core')}")
    # The workers' share of the cores, in their environment only (--threads, then the user's own setting,
    # inherited, win): set in this process's, it outlived the cluster, and a library caller's next numba run
    # refused it.
    share = threads or (None if threads_chosen_by_user() else max(1, cores // max(1, workers)))
    return {} if share is None else {"NUMBA_NUM_THREADS": str(share)}


def _started_local_cluster(distributed, workers: int, env: dict[str, str], scratch: str):
    """The LocalCluster's worker processes, spawned ignoring SIGINT (a Ctrl-C is the
    command's alone), with their scratch space in `scratch`, and without dask's words
    that are no concern of the user's."""
    import dask

    with warnings.catch_warnings(), _sigint_ignored(), dask.config.set({"temporary-directory": scratch}):
        # Without a dashboard the scheduler still serves its HTTP routes, on 8787 by default,
        # and says "Port 8787 is already in use" (a UserWarning) where another cluster has it.
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use", category=UserWarning)
        # Logs CRITICAL only: a worker still beating its heart as the cluster closes after Ctrl-C
        # logs "Failed to communicate with scheduler during heartbeat" as an ERROR, with a
        # traceback; a task's own error reaches the client as its exception anyway.
        return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                        dashboard_address=None, silence_logs=50, local_directory=scratch, env=env)


def scheduler_capacity(scheduler: str, weights: int) -> tuple[int, int | None]:
    """How many tasks a --scheduler's workers run at once (their threads), and what each
    task of a model of `weights` bytes may take on the tightest of them
    (`worker_task_budget`; None where no worker states a memory limit). A slide's tiles
    were chosen for the client's memory, and 1 GB workers were sent 7.8 GB tiles and died."""
    with client_for(None, scheduler) as client:
        workers = _workers_info(client)
        held = client.run(memory_held_between_runs)
    threads = sum(max(1, int(w.get("nthreads") or 1)) for w in workers.values())
    budgets = [worker_task_budget(w.get("memory_limit"), w.get("nthreads") or 1, weights,
                                  held.get(address, (w.get("metrics") or {}).get("memory") or 0))
               for address, w in workers.items()]
    stated = [b for b in budgets if b is not None]
    return max(1, threads), (min(stated) if stated else None)


def worker_task_budget(limit: int | None, threads: int, weights: int, held: int = 0) -> int | None:
    """What one task of a model of `weights` bytes may take on a Dask worker of `limit`
    bytes (dask's own, `dask worker --memory-limit`; 0 or None: no limit) running
    `threads` tasks at once, its process holding `held` bytes now: the limit below the
    share where dask starts spilling (0.7; its pause, 0.8, or kill, where those alone are
    set), less the process (what it holds, at least `memory.PROCESS_BYTES`: a fresh
    worker, counted at 200 MB, held 253-263 MB once it had run a slide, and the same
    slide's tiles, and its map's bits, differed between the first run and the next), shared among
    its threads, each share with the weights they all use (a task's estimate counts them,
    as a lone run's does). Below the pause share alone, a fresh 1 GB worker peaked 40 MB
    under it, and one holding the models of earlier runs (480 MB idle) was paused and
    killed."""
    if not limit:
        return None
    import dask

    from graphconv.memory import PROCESS_BYTES
    share = (dask.config.get("distributed.worker.memory.spill", None)
             or dask.config.get("distributed.worker.memory.pause", None)
             or dask.config.get("distributed.worker.memory.terminate", None) or 1.0)
    usable = int(limit * share) - max(PROCESS_BYTES, int(held)) - weights
    return max(0, usable) // max(1, int(threads)) + weights


def this_worker_s_budget(weights: int) -> int | None:
    """On a Dask worker, what one task of a model of `weights` bytes may take there
    (`worker_task_budget`), at most this process's budget; None elsewhere. An --images
    batch on a --scheduler without --memory-limit planned each slide for its machine's
    memory, not its worker's."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None
    try:
        worker = distributed.get_worker()
    except ValueError:  # not in a worker's task
        return None
    from graphconv.memory import memory_limit
    held = memory_held_between_runs()
    share = worker_task_budget(worker.memory_manager.memory_limit, worker.state.nthreads, weights, held)
    return None if share is None else min(share, memory_limit())


def memory_held_between_runs() -> int:
    """The bytes this process (a Dask worker) holds once graphconv lets go of what it keeps
    only for reuse (the arenas of the models it keeps loaded, the image a run's tiles
    read, freed heap pages), less those models' weights (a task's estimate counts its
    own model's). Measured with them held, a long-lived worker's share shrank run to run
    (467 MB, then 114 MB), and with it the same slide's tiles and the bits of its map."""
    import psutil

    from graphconv.allocator import release_freed_memory
    from graphconv.memory import weight_bytes

    with _WORKER_CACHE_LOCK:
        models = [entry[2] for entry in _WORKER_MODELS.values()]
        _WORKER_SOURCES.clear()
    for model in models:
        model.release_memory()
    release_freed_memory()
    return psutil.Process().memory_info().rss - sum(weight_bytes(model.graph) for model in models)


class _LostResultLogs(logging.Filter):
    """dask's logs of a result lost with its worker: "Couldn't gather 1 keys, rescheduling"
    (the tile is computed again, or `results_with_workers` says every worker left), and,
    once the run has stopped waiting for it, asyncio's "Task exception was never retrieved"
    with an AllExit traceback from inside dask's gather; and of a lost scheduler: "Failed
    to reconnect to scheduler", then two tracebacks of the CancelledError its client's
    closing raised inside dask (30 lines before graphconv's own "lost the Dask
    scheduler"). They said nothing the user can act on, or that graphconv's line does not."""

    def filter(self, record: logging.LogRecord) -> bool:
        raised = record.exc_info[1] if record.exc_info else None
        if type(raised).__name__ in ("AllExit", "CancelledError"):
            return False
        return not str(record.msg).startswith(("Couldn't gather", "Failed to reconnect to scheduler"))


def _quiet_lost_result_logs() -> None:
    """For the rest of the process: the garbage collector reports the abandoned gather,
    whenever it runs, so the filter cannot be taken off when the client closes."""
    for name in ("asyncio", "distributed.client"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _LostResultLogs) for f in logger.filters):
            logger.addFilter(_LostResultLogs())


def _why_lost(err: Exception) -> str:
    """dask's words for a lost scheduler, in a line: the reasons its tasks were cancelled
    for (FuturesCancelledError lists every task's key besides), else its message."""
    groups = getattr(err, "error_groups", None)
    if groups:
        return "its tasks cancelled: " + ", ".join(sorted({str(group.reason) for group in groups}))
    return " ".join(str(err).split())


WORKER_WAIT_S = 30  # how long a run waits for a scheduler's first worker
SCHEDULER_ANSWER_S = 10  # how long a scheduler has to answer a new connection


def _check_a_scheduler_answers(scheduler: str) -> None:
    """A tcp:// address (or one without a scheme) where something listens but no Dask
    scheduler does, its dashboard's port (http://host:8787/status, the address Dask
    prints first) or any other server, kept dask's Client waiting for ever: its timeout
    covers connecting, not the handshake after. A scheduler speaks first on a new
    connection (its handshake), so a listener silent for SCHEDULER_ANSWER_S is not one.
    Other schemes (tls://, ucx://) are left to dask, as are addresses it cannot parse."""
    import socket

    scheme, _, rest = scheduler.rpartition("://")
    host, _, port = rest.rpartition(":")
    if scheme not in ("", "tcp") or not host or not port.isdigit():
        return
    try:
        connection = socket.create_connection((host.strip("[]"), int(port)), timeout=SCHEDULER_ANSWER_S)
    except socket.timeout:
        raise GraphconvError(f"cannot reach the Dask scheduler at {scheduler}: nothing answered the connection in "
                             f"{SCHEDULER_ANSWER_S} s (a firewall, or no such machine)") from None
    except OSError as err:
        raise GraphconvError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None
    with connection:
        connection.settimeout(SCHEDULER_ANSWER_S)
        try:
            said = "closed the connection at once" if not connection.recv(1) else None
        except socket.timeout:
            said = f"said nothing in {SCHEDULER_ANSWER_S} s"
        except OSError as err:
            said = f"failed ({err})"
    if said:
        raise GraphconvError(f"no Dask scheduler at {scheduler}: what listens there {said}, where a scheduler "
                             "speaks first; give the address `dask scheduler` prints as 'Scheduler at', "
                             "tcp://HOST:8786 by default, not its dashboard's")


def _wait_for_a_worker(client, scheduler: str) -> None:
    """A scheduler without workers took the tasks and the run waited for ever, its bar
    at 0: wait a while for one to join, then say so."""
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)  # running ones: a worker paused for memory takes no task
    except (TimeoutError, OSError):
        paused = _paused_workers(client)
        if paused:
            raise GraphconvError(f"every worker of the Dask scheduler at {scheduler} ({paused}) is paused for "
                                 f"memory (waited {WORKER_WAIT_S} s): {PAUSED_WHY}") from None
        raise GraphconvError(f"the Dask scheduler at {scheduler} has no workers (waited {WORKER_WAIT_S} s): start "
                             f"`dask worker {scheduler}` on machines that reach the model, the images and the "
                             "outputs at the same paths as this one") from None


PAUSED_WHY = ("Dask pauses a worker whose process passes 80% of its memory limit, and its tasks wait; give the "
              "workers more memory (dask worker --memory-limit), or this run a --memory-limit (the budget each "
              "tile is chosen for) well under 80% of a worker's, the model and some 200 MB of the process itself "
              "counted (a worker keeps the last models it ran: restart the workers to free them)")


def _workers_info(client) -> dict:
    """The scheduler's record of every worker (some distributed versions list only five
    unless asked for all)."""
    try:
        return client.scheduler_info(n_workers=-1).get("workers", {})
    except TypeError:  # a version without the argument lists them all
        return client.scheduler_info().get("workers", {})


def _working(info: dict) -> bool:
    """Whether a worker takes or finishes tasks: running, or paused for memory with a task
    still executing (a pause stops new tasks only; the one under way, often what took
    the memory, finishes and the worker resumes). `task_counts` comes with the
    heartbeats, so it is a second or so old."""
    if info.get("status", "running") == "running":
        return True
    return info.get("status") == "paused" and info.get("metrics", {}).get("task_counts", {}).get("executing", 0) > 0


def _paused_workers(client) -> str | None:
    """How many of the cluster's workers are paused ("2 paused"), where all of those it
    has are, none executing a task; None otherwise. A worker's process over 80% of its
    memory limit is paused by Dask (distributed.worker.memory.pause), and a paused
    worker is still listed: waiting for it to finish the tasks waited for ever."""
    workers = list(_workers_info(client).values())
    if not workers or any(_working(info) for info in workers):
        return None
    paused = sum(info.get("status") == "paused" for info in workers)
    return f"{paused} paused" if paused == len(workers) else None


WORKER_CHECK_S = 5  # while waiting for tasks, how often to ask whether the cluster still has workers


def results_with_workers(client, futures) -> Iterator[tuple[Any, Any]]:
    """Each future with its result, as they complete (distributed's as_completed, with
    the results); but a cluster left without workers for WORKER_WAIT_S is an error that
    says so, not a command silent for ever. Its only worker killed, the tasks wait for a
    new one; and a result finished on a worker that then left is computed again, so
    fetching it waits the same way (every worker stopped mid-run: a review's run hung)."""
    import distributed

    remaining, alone_since = set(futures), None
    while remaining:
        try:
            finished, remaining = distributed.wait(remaining, timeout=WORKER_CHECK_S, return_when="FIRST_COMPLETED")
        except TimeoutError:
            alone_since = _workers_left(client, alone_since)
            continue
        for future in finished:
            try:
                result = future.result(timeout=WORKER_CHECK_S)
            except TimeoutError:
                if future.status == "error":  # the task's own TimeoutError
                    raise
                remaining.add(future)  # its worker left with it: it waits to be computed again
                alone_since = _workers_left(client, alone_since)
                continue
            alone_since = None
            yield future, result


def _workers_left(client, alone_since: float | None) -> float | None:
    """None while the cluster has a worker that takes tasks; else since when it has had
    none (none at all, or every one paused for memory), an error once that is WORKER_WAIT_S."""
    import time

    if any(_working(info) for info in _workers_info(client).values()):
        return None
    now = time.monotonic()
    if alone_since is None or now - alone_since < WORKER_WAIT_S:
        return now if alone_since is None else alone_since
    paused = _paused_workers(client)
    if paused:
        raise GraphconvError(f"every worker of the Dask scheduler at {client.scheduler.address} ({paused}) has been "
                             f"paused for memory for {WORKER_WAIT_S} s, so no tile could run: {PAUSED_WHY}; a map "
                             "written with --resume keeps its tiles done, for the same command to go on from")
    raise GraphconvError(f"every worker of the Dask scheduler at {client.scheduler.address} left during the run, "
                         f"and none joined in {WORKER_WAIT_S} s: start `dask worker` again (a map written with "
                         "--resume keeps its tiles done, for the same command to go on from)")


PACKAGES_THAT_MUST_AGREE = ("graphconv", "numpy", "numba")


def installed_version(name: str) -> str | None:
    """A package's installed version on this machine (None: not installed as a
    distribution, e.g. graphconv from a source tree)."""
    import importlib.metadata
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _check_worker_versions(client, scheduler: str) -> None:
    """A worker with another graphconv, numpy or numba than this machine's computed its
    tiles with other code (scores that could differ from one tile to the next, or a
    task it cannot read) without a word: refuse the run, naming the first such worker.
    The workers are asked through the standard library alone (importlib.metadata), so a
    worker whose graphconv is older, or missing, answers too. Workers that join the
    scheduler after this check are not asked."""
    import importlib.metadata
    for name in PACKAGES_THAT_MUST_AGREE:
        here = installed_version(name)
        # Each worker's answer, or the exception it raised (on_error="return").
        for address, version in sorted(client.run(importlib.metadata.version, name, on_error="return").items()):
            if isinstance(version, importlib.metadata.PackageNotFoundError):
                version = None
            elif isinstance(version, BaseException):
                raise GraphconvError(f"the Dask worker {address} of {scheduler} could not say its {name} version: "
                                     f"{type(version).__name__}: {version}")
            if version != here:
                raise GraphconvError(f"the Dask worker {address} of {scheduler} runs {name} {version or '(none)'} "
                                     f"(this machine: {here or '(none)'}): install the same graphconv, numpy and "
                                     "numba on every machine of the cluster, so that every tile is computed by the "
                                     "same code")


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while the block runs (in the main thread; elsewhere nothing
    changes): processes spawned in it inherit that, as an ignored signal survives exec,
    and Python leaves an ignored SIGINT ignored rather than raising KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _tile_block(ref: ModelRef, image: str, box: tuple[int, int, int, int], rows, cols,
                options: MapOptions) -> tuple[np.ndarray, Any]:
    """On a worker: one tile's block of the map, transformed, and with --skip-damaged
    what it left out (`tiling.DamagedCells`; else None)."""
    from graphconv.tiling import DamagedCells, Tile, model_map_transform, tile_block

    model, key = _model_and_source_key(ref, image, options)
    source = _WORKER_SOURCES.get(key)
    if source is None:  # opened (a PNG: decoded) once per worker and image, not per tile
        source = options.open_image(model, image, options.nodata)
        _WORKER_SOURCES.clear()
        _WORKER_SOURCES[key] = source
    transform, _, _ = model_map_transform(model, options.reduce, options.classes)
    damaged = DamagedCells() if options.skip_damaged else None
    block = tile_block(options.grid(model), source, Tile(rows, cols, box), options.device, transform, damaged)
    return np.ascontiguousarray(block), damaged


def run_tiles_on_cluster(client, ref: ModelRef, image: str, plan, out, options: MapOptions,
                         progress: Callable[[Any], None] | None = None,
                         blank_cells: Callable[[Any], np.ndarray] | None = None, done: Collection[Any] = (),
                         damaged: Any = None, piece_cells: tuple[int, int] | None = None):
    """Every tile of `plan` as a task; blocks written into `out` as they arrive (what
    --skip-damaged left out of them added to `damaged`, `tiling.DamagedCells`). The cells
    `blank_cells(tile)` marks are written here as not computed, and a tile of such cells
    alone is not sent (as `tiling.run_tiled` does). The tiles in `done` (a resumed run's)
    are in `out` already: neither sent nor written. `progress(tile)` is called here, on
    the client, after each block is written (`MapFile.record` lists it then). With
    `piece_cells`, each tile is sent as pieces of at most that many cells
    (`tiling.in_pieces`), `progress` still called once per tile."""
    from graphconv.background import blank_tiles, fill_value, without_blank_cells
    from graphconv.tiling import in_pieces, write_block

    pieces = in_pieces(options.grid(worker_model(ref)) if piece_cells else None, plan, piece_cells)
    plan, progress, done = pieces.plan, pieces.per_tile(progress), pieces.done(done)
    blank = blank_tiles(plan.tiles, blank_cells)
    blank = [t for t in blank if t not in done]
    skipped = set(blank) | done
    futures = {client.submit(_tile_block, ref, image, t.box, t.rows, t.cols, options, pure=False): t
               for t in plan.tiles if t not in skipped}
    for tile in blank:
        write_block(out, tile, fill_value(out.dtype), progress)
    for future, (block, damaged_there) in results_with_workers(client, futures):
        tile = futures[future]
        if damaged is not None and damaged_there is not None:
            damaged.add(damaged_there)
        mask = blank_cells(tile) if blank_cells is not None else None
        write_block(out, tile, without_blank_cells(block, mask), progress)
    return out


RankedClasses = tuple[tuple[str, float], ...]  # (label, score), best first


@dataclass
class ImageResult:
    image: str
    output: str | None = None
    shape: tuple[int, ...] | None = None
    error: str | None = None
    note: str | None = None  # what the user should know about this image's map (`stored_orientation_note`)
    turned: bool = False  # mapped upright per its EXIF orientation (`images.turned_upright`): counted in one note
    converted: str | None = None  # what its bands became for the network (`sources.channel_conversion`): one note
    scaled: str | None = None  # how its pixels of more than 8 bits came onto 0..255 (`sources.value_scaling`): one note
    eight_bit: bool = False  # it holds 8 bits a channel (`sources.eight_bit`): a spec scaled for deeper values notes it
    nodata_possible: bool = False  # whether any of its pixels can be no-data (`sources.nodata_can_occur`)
    memory_tile: tuple[int, int] | None = None  # the tiles planned from `image_tile`'s, the whole image over the budget
    resumed: tuple[int, int] | None = None  # --resume: (tiles an earlier run had done, tiles in all): one note
    partial_map: "PartialMapLeft | None" = None  # without --resume: a stopped --resume run's beside its map: one note
    made_meanwhile: bool = False  # its map made by another run while this one ran, and kept (`_made_meanwhile`)
    image_stamp: list[int] | None = None  # the image file's `image_stamp` before it was read: its map's row records it
    placement: CellPlacement | None = None  # where its cells stand on the image: its map's row records it
    top: RankedClasses | None = None  # --top: its map's best classes (`ranked_classes`): said, and its row records them
    damaged: DamagedCells | None = None  # --skip-damaged: what was left out (said, and its row records it)
    held_elsewhere: bool = False  # its partial map was another run's to write: tried again after the rest (`_map_each`)


def stored_orientation_note(source) -> str | None:
    """What to say of a TIFF read tile by tile whose Orientation tag is not 1 (as
    stored): its map is of the stored pixels, which viewers show turned. (Pictures
    decoded whole by Pillow are turned upright: `images.upright`; turning a slide tile by
    tile would also turn its pyramid, its georeference and its cells' placement.)"""
    from graphconv.images import EXIF_ORIENTATION

    tif = getattr(source, "tiff", None)
    if tif is None:
        return None
    try:
        tag = tif.pages[0].tags.get(EXIF_ORIENTATION)
        value = int(tag.value) if tag is not None else 1
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    if not 2 <= value <= 8:  # as stored, or a value no viewer turns by
        return None
    return (f"the TIFF's Orientation is {value}, not 1: viewers show it turned, but the map is of its pixels as "
            "stored (rows and columns as the file holds them), as are its cells' places")


def _one_image(ref: ModelRef, image: str, output: str, options: MapOptions, tile: int | None,
               stopped: Callable[[], bool] | None = None, found: list[int] | None = None) -> ImageResult:
    """On a worker (or here): one image's map, written atomically to `output`, and with
    --top its best classes, read from it there (the map is on that machine's disk, and
    ranking 10,000 photos' maps is then shared among the workers); any user error is
    returned, not raised, so one bad image does not stop the others. `found`: the
    `file_stamp` `output` had when the batch checked it, before any work; a map there
    since is another run's, and is not replaced (`_as_found`)."""
    result = _image_mapped(ref, image, output, options, tile, stopped, found)
    if result.error or result.output is None or options.top is None:
        return result
    try:
        return replace(result, top=ranked_classes(result.output, options, worker_model(ref).graph.meta.get("labels")))
    except (GraphconvError, OSError, MemoryError, ValueError) as err:
        return replace(result, error=user_message(err))


def ranked_classes(path: str, options: MapOptions, labels: list[str] | None) -> RankedClasses:
    """The `options.top` best classes of the map at `path` by `options.top_by`
    (`classes.class_scores`), best first; none for a map of no computed cell (all
    background or no-data). `labels`: the model's, of every class."""
    from graphconv.scales import kept_labels, top_classes

    scores = class_scores(read_map(path), options.top_by)[0]
    if np.isnan(scores).all():
        return ()
    return tuple((label, score) for _, label, score in top_classes(scores, options.top,
                                                                    kept_labels(labels, options.classes)))


def read_map(path: str) -> np.ndarray:
    """A map --images wrote, as (1, K, rows, cols): an .npy memory-mapped, or a .tif."""
    from graphconv.georef import is_tiff_output

    if not is_tiff_output(path):
        return np.load(path, mmap_mode="r", allow_pickle=False)
    from graphconv.sources import require
    bands = require("tifffile").imread(path)
    return bands.reshape(1, -1, *bands.shape[-2:])


def _image_mapped(ref: ModelRef, image: str, output: str, options: MapOptions, tile: int | None,
                  stopped: Callable[[], bool] | None = None, found: list[int] | None = None) -> ImageResult:
    """`_one_image`'s map (`_map_made`). A failure is this image's alone: the map kept
    where another run made it meanwhile, the image left for later where another run
    holds its partial map (`_settled_by_another_run`), else the error returned as its one
    line, not raised (raised with --traceback), so the batch goes on."""
    job = _ImageJob(ref, image, output, options, tile, stopped, found)
    try:
        return _map_made(job)
    except (GraphconvError, OSError, MemoryError, ValueError) as err:
        settled = _settled_by_another_run(job, err)
        if settled is not None:
            return settled
        if options.traceback:
            raise
        return ImageResult(image, error=user_message(err) + _smaller_than_a_crop_hint(image, err))


@dataclass
class _ImageJob:
    """One image's map as `_one_image` was asked for it (`tile`: the --tile asked, None to
    choose one here), and the model once loaded, which a failure is judged with."""
    ref: ModelRef
    image: str
    output: str
    options: MapOptions
    tile: int | None
    stopped: Callable[[], bool] | None
    found: list[int] | None
    model: Any = None

    def as_found(self, stamp: list[int] | None) -> Callable[[], None]:
        """`_as_found` for this map, with the image's `stamp` before it was read."""
        return _as_found(self.output, self.found, self.image, stamp)


@dataclass(frozen=True)
class _ReadImage:
    """The image as this task opened it: its `source`, and the file's `stamp` taken just
    before (an image edited while it is read is not its map's)."""
    source: Any
    stamp: list[int] | None

    @property
    def hw(self) -> tuple[int, int]:
        return (self.source.height, self.source.width)


def _map_made(job: _ImageJob) -> ImageResult:
    """An image's map, made and written: refused at once where the image is a broken link,
    kept where another run made it meanwhile; else the image read, its tiles chosen for
    the memory, the map computed in them (or whole) and written, and what the batch is
    to say of it returned."""
    from graphconv.tiling import model_map_transform

    _refuse_a_broken_link(job.image)
    job.model = model = worker_model(job.ref)
    if _made_meanwhile(job.ref, model, job.image, job.output, job.options, job.tile, job.found):
        return _kept_as_made_meanwhile(model, job.image, job.output, job.options, job.tile)
    stamp = image_stamp(job.image)  # before the read: an image edited while it is read is not this map's
    read = _ReadImage(job.options.open_image(model, job.image, _raster_nodata(job.image, job.options)), stamp)
    if job.options.scales:
        return _at_scales(model, job.image, job.output, read.source, job.options, job.as_found(stamp), stamp)
    transform, _, _ = model_map_transform(model, job.options.reduce, job.options.classes)
    plan = _image_plan(job, read)
    if plan.tile is not None:
        written = _MapWritten(*_map_in_tiles(
            job.ref, model, job.image, job.output, read.source, plan.grid, plan.tile, job.options, plan.blank_cells,
            plan.contents, job.stopped, job.as_found(stamp), plan.budget if plan.resumed_tile else None))
    else:
        written = _whole_map_written(job, read, plan, transform)
    return _image_result(job, read, plan, written)


@dataclass(frozen=True)
class _ImagePlan:
    """How an image's map is made (`_image_plan`): its `grid`, the cells left out
    (`background`, and its `blank_cells`), the memory `budget`, the `tile` it is mapped in
    (None: whole, in one pass) and where that tile came from, a note on a wasteful
    --tile, and what the map records (`contents`)."""
    grid: Any
    background: Any
    blank_cells: Any
    budget: int
    tile: int | tuple[int, int] | None
    resumed_tile: tuple[int, int] | None
    memory_tile: int | tuple[int, int] | None
    wasteful: str | None
    contents: dict


def _image_plan(job: _ImageJob, read: _ReadImage) -> _ImagePlan:
    """The tile an image is mapped in: the --tile asked, else a stopped --resume run's (its
    partial map goes on with the same tiles), else the cheapest around the cells left out,
    else the largest the memory takes (None: the whole image fits); and what the map
    records of how it was made, the tile plan among it."""
    from graphconv.background import cells_left_out
    from graphconv.tiling import budget_beside

    options, grid = job.options, job.options.grid(job.model)
    background = cells_left_out(read.source, grid, options.skip_background, options.max_nodata,
                                skip_damaged=options.skip_damaged)
    budget = budget_beside(read.source, _image_budget(options, job.model))
    resumed_tile = partial_map_tile(job.output, grid, read.hw) if job.tile is None and options.resume else None
    tile, blank_cells = job.tile or resumed_tile, None
    if background is not None:  # no tissue near their centres, or over a raster's no-data
        blank_cells = background.blank_cells
        tile = tile or background.cheapest_tile(grid, read.hw, budget)
    memory_tile = None if tile else image_tile(grid, read.hw, budget)
    tile = tile or memory_tile
    wasteful = _wasteful_tile_note(grid, read.hw, tile, budget, background) if (
        tile is not None and tile == job.tile) else None
    if tile is None and options.skip_damaged:  # one tile, the image, mapped around what cannot be decoded
        tile = max(read.source.height, read.source.width)
    return _ImagePlan(grid, background, blank_cells, budget, tile, resumed_tile, memory_tile, wasteful,
                      _map_contents(job, read, grid, background, tile))


def _image_budget(options: MapOptions, model) -> int:
    """The memory an image's run may take: --memory-limit, else this Dask worker's share
    (an --images batch on a --scheduler planned each slide for its worker, not its
    machine), else this process's budget."""
    budget = options.memory_limit
    if budget is None:
        from graphconv.memory import weight_bytes
        budget = this_worker_s_budget(weight_bytes(model.graph))
    if budget is None:
        from graphconv.memory import memory_limit
        budget = memory_limit()
    return budget


def _map_contents(job: _ImageJob, read: _ReadImage, grid, background, tile) -> dict:
    """What the map records of how it was made: the image, model and settings, its no-data,
    the image's stamp (a map of an image changed since is not kept), and the tile plan
    (which --resume goes on with)."""
    from graphconv.georef import map_contents
    from graphconv.tiling import WHOLE_IMAGE_PLAN, plan_tiles, recorded_plan

    ref, image, options = job.ref, job.image, job.options
    return {**map_contents(image, ref.path, job.model, options.classes, options.reduce,
                           left_out_record(options, image)),
            **(background.nodata_record() if background is not None else {}),
            IMAGE_STAMP: read.stamp, **loaded_with(ref),
            "tile_plan": recorded_plan(plan_tiles(grid, read.hw, tile), tile) if tile is not None
            else WHOLE_IMAGE_PLAN}


@dataclass(frozen=True)
class _MapWritten:
    """What writing an image's map left to say: its `shape`, and of a map in tiles
    `_map_in_tiles`'s tiles resumed, tiles planned, partial map beside it, cells
    --skip-damaged left out and note on its tiles (a map computed whole: its partial map
    beside it alone)."""
    shape: tuple[int, ...]
    resumed: tuple[int, int] | None = None
    planned: tuple[int, int] | None = None
    partial_map: PartialMapLeft | None = None
    damaged: DamagedCells | None = None
    tiles_note: str | None = None


def _whole_map_written(job: _ImageJob, read: _ReadImage, plan: _ImagePlan, transform) -> _MapWritten:
    """The map of an image that fits the memory, computed in one pass and written, unless
    the command that sent it was stopped meanwhile (nobody is waiting for it)."""
    options, source = job.options, read.source
    partial_map = _partial_map_beside_a_whole_map(job.output) if not options.resume else None
    x = source.read(0, 0, source.height, source.width)
    result = plan.grid.whole(x[None] if x.ndim == 3 else x, options.device)
    result = result if transform is None else transform(result)
    if job.stopped is not None and job.stopped():  # not written: nobody is waiting for it
        raise StoppedByTheCommand("stopped by the command that sent it, before its map was written")
    _write_map(job.output, result, source, plan.grid, plan.contents, job.as_found(read.stamp))
    return _MapWritten(tuple(result.shape), partial_map=partial_map)


def _image_result(job: _ImageJob, read: _ReadImage, plan: _ImagePlan, written: _MapWritten) -> ImageResult:
    """What the batch says and records of an image's map: its notes (how its tiles went,
    its TIFF, its frames, no tissue found, cells left out damaged) as one line, and what
    became of its pixels on the way (turned, converted, scaled, no-data) for the
    batch's notes, with its cells' placement."""
    from graphconv.georef import cell_placement
    from graphconv.images import turned_upright
    from graphconv.sources import channel_conversion, eight_bit, nodata_can_occur, tiff_notes, value_scaling
    from graphconv.tiling import DamagedCells

    image, options, source, damaged = job.image, job.options, read.source, written.damaged
    notes = (written.tiles_note, plan.wasteful, stored_orientation_note(source),
             *tiff_notes(source, bool(options.mask)), _first_frame_note(image),
             _no_tissue_note(plan.background, plan.grid, read.hw, options),
             damaged.describe() if damaged is not None and damaged.cells else None)
    return ImageResult(image, job.output, written.shape, memory_tile=written.planned if plan.memory_tile else None,
                       resumed=written.resumed, partial_map=written.partial_map,
                       note="; ".join(filter(None, notes)) or None,
                       turned=turned_upright(image), converted=channel_conversion(source),
                       scaled=value_scaling(source), eight_bit=eight_bit(source),
                       nodata_possible=nodata_can_occur(getattr(source, "inner", source)), image_stamp=read.stamp,
                       placement=replace(cell_placement(source, plan.grid.cell_area), contents=plan.contents),
                       damaged=damaged if damaged is not None else DamagedCells() if options.skip_damaged else None)


def _settled_by_another_run(job: _ImageJob, err: Exception) -> ImageResult | None:
    """What became of an image whose map another run settled while this one failed: made
    there as this run would make it (kept, not an error), or its partial map held by
    another run of a listed batch that does not wait for it (tried again after the
    rest: `_map_each`); None otherwise."""
    from graphconv.files import FinishedByAnotherRun, HeldByAnotherRun

    options = job.options
    if isinstance(err, (WrittenMeanwhile, FinishedByAnotherRun)) and _made_meanwhile(
            job.ref, job.model, job.image, job.output, options, job.tile, job.found):
        return _kept_as_made_meanwhile(job.model, job.image, job.output, options, job.tile)
    if isinstance(err, HeldByAnotherRun) and options.listed_in is not None and not options.wait_for_other_runs:
        return ImageResult(job.image, held_elsewhere=True)
    return None


def _smaller_than_a_crop_hint(image: str, err: Exception) -> str:
    """What to add to the error of an image smaller than a crop: how to map it anyway
    (and, for a picture, to resize it); "" for any other error."""
    from graphconv.images import PICTURE_SUFFIXES, RESIZE_HINT, SMALLER_THAN_A_CROP_HINT

    hint = SMALLER_THAN_A_CROP_HINT if isinstance(err, SmallerThanTheCrop) else ""
    hint += RESIZE_HINT if hint and image.lower().endswith(PICTURE_SUFFIXES) else ""
    return hint


SCALES_NOT_IN_TILES = ("--scales resizes a picture (JPEG, PNG, ...) read whole; a TIFF or zarr image is read in "
                       "tiles at one resolution: map a slide without --scales, once per resolution wanted (--mpp, "
                       "or --level and --downsample), and compare the maps")


def _at_scales(model, image: str, output: str, source, options: MapOptions, unchanged: Callable[[], None],
               stamp: list[int] | None) -> ImageResult:
    """--images --scales: the picture's class vector as `run --image --scales` gives it
    (`scales.multiscale`: its map at each shorter side, and mirrored with --flip, reduced
    over positions, then over the maps), written as a (1, K) .npy."""
    from graphconv.files import atomic_write
    from graphconv.images import turned_upright
    from graphconv.memory import check_run_fits
    from graphconv.scales import multiscale, scaled_size
    from graphconv.sources import PillowSource, channel_conversion

    if not isinstance(source, PillowSource):
        raise GraphconvError(SCALES_NOT_IN_TILES, file=image)
    largest = scaled_size(source.height, source.width, max(options.scales))
    check_run_fits(model.graph, 1, largest, f"scale {max(options.scales)} ({largest[0]}x{largest[1]})", file=image)
    x = source.read(0, 0, source.height, source.width)[None]
    scores = multiscale(model, x, options.scales, options.flip, options.scales_reduce, options.device).scores
    scores = np.ascontiguousarray(scores, np.float32)
    atomic_write(output, lambda p: np.save(p, scores), suffix=".npy", unchanged=unchanged)
    return ImageResult(image, output, scores.shape, note=_first_frame_note(image), turned=turned_upright(image),
                       converted=channel_conversion(source), image_stamp=stamp)


class WrittenMeanwhile(GraphconvError):
    """A map's file written by another run after this batch found it (`_as_found`)."""


WRITTEN_MEANWHILE = "was written by another run while this one computed its map"


def _made_meanwhile(ref: ModelRef, model, image: str, output: str, options: MapOptions, tile: int | None,
                    found: list[int] | None) -> bool:
    """Whether another run made `output` as this one would (`holds_its_map`) after this
    --skip-existing or --resume batch found it missing or stale (`found`): two array
    tasks given overlapping lists, or a batch started again before the first ended. Each
    computed the images they shared, and all but the first to finish one then refused to
    replace it and exited 2. An .npy counts once its row in the list records its
    settings: another model with as many classes makes a map of the same shape."""
    from graphconv.files import file_stamp
    from graphconv.georef import is_tiff_output
    from graphconv.manifest import Manifest

    if options.listed_in is None or file_stamp(output) == found:
        return False
    made_with = Manifest(options.listed_in).made_with
    if not is_tiff_output(output) and made_with(output) is None:
        return False
    return holds_its_map(ref, model, image, output, options, tile, made_with)


def _kept_as_made_meanwhile(model, image: str, output: str, options: MapOptions, tile: int | None) -> ImageResult:
    _, shape = image_map_shape(model, options.grid(model), image, options, tile)
    return ImageResult(image, output, shape, made_meanwhile=True)


def _map_in_tiles(ref: ModelRef, model, image: str, output: str, source, grid, tile: int, options: MapOptions,
                  blank_cells, contents: dict, stopped: Callable[[], bool] | None = None,
                  unchanged: Callable[[], None] | None = None, cut_to: int | None = None
                  ) -> tuple[tuple[int, ...], tuple[int, int] | None, tuple[int, int], PartialMapLeft | None,
                             Any, str | None]:
    """One image's map computed in tiles into `output` as a single --image's run writes
    one (`tiling.MapFile`): memory-mapped tile by tile, not held in memory (a slide's map
    of many classes can be larger than the budget), and renamed into place once complete.
    With --resume (`options.resume`) into its partial map beside `output`, kept when the
    batch stops and continued from the tiles it lists when the same command runs again.
    Returns the map's shape, (tiles an earlier run had done, tiles in all) where it went
    on from them (None: a new map), the largest tile planned, (H, W) input pixels, and
    what became of a stopped --resume run's partial map beside `output` (without
    --resume: removed once the whole map is written where it is of this same job, as a
    single --image's run does; else left, said), what --skip-damaged left out
    (`tiling.DamagedCells`, or None), and a note where the tiles were computed in pieces
    or a stale partial map was removed (`tiling.PartialMap.stale_tiles_note`).
    `stopped()` is asked before each tile is recorded: true, the map stops there as at a
    Ctrl-C (`StoppedByTheCommand`), its tiles done kept with --resume, else removed.
    `cut_to`: the budget a stopped run's tiles, resumed, are computed in pieces to fit
    (`tiling.piece_cells_within`)."""
    from graphconv.background import blank_tiles
    from graphconv.georef import cell_placement, georeference_of_map, is_tiff_output
    from graphconv.tiling import (DamagedCells, MapFile, PartialMap, model_map_transform, piece_cells_within,
                                  pieces_note, plan_tiles, run_tiled, stopped_partial_map)

    plan = plan_tiles(grid, (source.height, source.width), tile)
    piece_cells = piece_cells_within(grid, plan, cut_to) if cut_to is not None else None
    transform, channels, dtype = model_map_transform(model, options.reduce, options.classes)
    shape = (1, channels, *plan.map_hw)
    blank = frozenset(blank_tiles(plan.tiles, blank_cells))
    partial_beside = not options.resume and PartialMap(output).exists()
    job = (resume_job(ref, model, image, source, options, plan, shape, dtype) if options.resume or partial_beside
           else None)
    stale, left = stopped_partial_map(output, job) if partial_beside else (None, None)
    map_file = MapFile(output, shape, dtype, chunk_hw=plan.cells_hw,
                       georeference=georeference_of_map(source, grid.cell_area) if is_tiff_output(output) else None,
                       placement=replace(cell_placement(source, grid.cell_area),
                                         contents=contents),
                       resume=job if options.resume else None, tiles=plan.tiles, blank=blank, unchanged=unchanged,
                       waiting=functools.partial(waiting_note, image) if options.wait_for_other_runs else None)
    damaged = DamagedCells() if options.skip_damaged else None
    with map_file as out:
        resumed = (len(map_file.done), len(plan.tiles)) if map_file.done else None
        if len(map_file.done) < len(plan.tiles):
            run_tiled(grid, source, tile, out=out, device=options.device, transform=transform,
                      progress=_unless_stopped(map_file.record, stopped), blank_cells=blank_cells,
                      done=map_file.done, damaged=damaged, piece_cells=piece_cells)
    stale_tiles = map_file.partial.stale_tiles_note(image) if map_file.partial is not None else None
    notes = (stale_tiles, pieces_note(grid, plan, piece_cells, cut_to) if piece_cells else None)
    return (shape, resumed, plan.tile_hw, _partial_map_written_over(stale) if stale else _another_job_s(output, left),
            damaged, "; ".join(filter(None, notes)) or None)


def waiting_note(image: str) -> None:
    """Said at once, not with the batch's notes at its end: the run may wait long."""
    print(f"note: {image}: another graphconv run is writing its map (its partial map's lock is held): waiting for it; "
          "its map is kept once it is done, and if that run stops this one goes on from its tiles", file=sys.stderr,
          flush=True)


@dataclass(frozen=True)
class PartialMapLeft:
    """A stopped --resume run's partial map beside a map a batch without --resume wrote:
    `fate` "removed" (of this same map: written over, it held nothing more), "in use"
    (another run is resuming it), or how its job differs from this run's (left as it is)."""
    shown: str
    tiles: int
    fate: str


def _partial_map_written_over(partial) -> PartialMapLeft:
    tiles = partial.count_done()
    return PartialMapLeft(partial.shown, tiles, "removed" if partial.remove_unless_in_use() else "in use")


def _another_job_s(output: str, differences: list[str] | None) -> PartialMapLeft | None:
    from graphconv.tiling import PartialMap
    if not differences:
        return None
    partial = PartialMap(output)
    return PartialMapLeft(partial.shown, partial.count_done(), "; ".join(differences))


def _partial_map_beside_a_whole_map(output: str) -> PartialMapLeft | None:
    """A stopped --resume run's partial map beside a map computed whole, in no tiles: of
    another job, as a --resume run computes in tiles."""
    from graphconv.tiling import stopped_partial_map
    return _another_job_s(output, stopped_partial_map(output, None)[1])


class StoppedByTheCommand(Exception):
    """Raised on a worker when the command that sent the task was stopped (Ctrl-C)."""


def _unless_stopped(record: Callable, stopped: Callable[[], bool] | None) -> Callable:
    """`record` for each tile written, first raising StoppedByTheCommand once `stopped()`."""
    if stopped is None:
        return record

    def checked(tile):
        if stopped():
            raise StoppedByTheCommand(f"stopped by the command that sent it, after {tile}")
        record(tile)
    return checked


def resume_job(ref: ModelRef, model, image: str, source, options: MapOptions, plan, shape, dtype) -> dict:
    """What a --resume run computes, stored in its partial map (`tiling.PartialMap`) and
    compared on the next: everything that changes the map's values or layout. The model
    and image by path and by their files (a recompile, a retrained weights file, a
    replaced image is another job: the image by its `files.file_stamp`), the options that change
    what is read or kept, the tile plan (`partial_map_tile` reads its tile size back), the
    map's shape and type, and graphconv's version and kernels (their rounding: a partial
    map of another build's kernels would mix two builds' tiles). The model's files count
    by their contents (`files.model_file_digests`): a file added to its folder, or a
    weights file copied back with a new time, is the same job."""
    from graphconv import __version__
    from graphconv.files import file_stamp, model_file_digests
    from graphconv.kernel_cache import sources_digest

    image = str(Path(image).resolve())
    return {
        "graphconv": f"{__version__}, kernels {sources_digest()}",
        "model": ref.path,
        "model files": model_file_digests([ref.path, *model.graph.meta.get("read_from", ())]),
        "--crop-size": ref.crop_size, "--task": ref.task,
        "image": image, "image file": {image: file_stamp(image)},
        "image as read": f"{source.height}x{source.width}",
        "--level": options.level, "--downsample": options.downsample, "--mpp": options.mpp,
        "--bands": options.bands, "--reduce": options.reduce, "--classes": options.classes,
        "--crops": options.crops, "--skip-background": options.skip_background,
        "--max-nodata": options.max_nodata, "--nodata": options.nodata, "--device": options.device,
        "tile plan": plan.as_recorded(),
        "map": f"{np.dtype(dtype)} {tuple(shape)}",
        **({"--resize": list(options.resize)} if options.resize else {}),  # absent unless given: earlier jobs hold
        **({"--mask": left_out_record(options, image)["mask"]} if options.mask else {}),  # a mask edited: another
        **({"--pad-image": options.pad_image} if options.pad_image else {}),
        **({"--activation": ref.activation} if ref.activation else {}),
    }


def partial_map_tile(output: str | None, grid, image_hw: tuple[int, int]) -> tuple[int, int] | None:
    """The tiles of a stopped --resume run's partial map of `output`, (H, W) input pixels,
    for a --resume without --tile: where the tile came from the memory budget, another
    --workers count or a machine with more or less memory would choose another, a job
    the partial map is not, and its tiles done would be refused. Read from the job's
    tile plan ("... tiles of up to HxW pixels, CxD cells"): the tile that holds as many
    cells (`tiling.tile_for_cells`) plans its tiles again (a plan recorded without its
    cells, the largest box's size). None where there is no such partial map. Tiles over
    this run's budget are computed in pieces (`tiling.piece_cells_within`): refused, a
    smaller Dask worker could never resume what a larger one began."""
    from graphconv.tiling import PartialMap, tile_for_cells

    job = PartialMap(output).job() if output else None
    recorded = str(job.get("tile plan", "")) if job else ""
    found = re.search(r"tiles? of up to (\d+)x(\d+) pixels", recorded)
    if found is None:
        return None
    cells = re.search(r"pixels, (\d+)x(\d+) cells", recorded)
    return ((int(found.group(1)), int(found.group(2))) if cells is None
            else tile_for_cells(grid, image_hw, (int(cells.group(1)), int(cells.group(2)))))


def image_tile(grid, image_hw: tuple[int, int], budget: int | None) -> int | tuple[int, int] | None:
    """The tile an image is mapped in when no --tile was given: None (the whole image in
    one pass) where that fits the memory budget, else the largest tile that does
    (`tiling.choose_tile`, its tiles made even: `balanced_tile`), as a single --image's
    run does. A slide in a batch was refused, its whole-image run over the budget."""
    from graphconv.memory import memory_limit
    from graphconv.tiling import balanced_tile, choose_tile, tile_bytes

    budget = memory_limit() if budget is None else budget
    if tile_bytes(grid, image_hw) <= budget:
        return None
    return balanced_tile(grid, image_hw, choose_tile(grid, image_hw, budget))


def _no_tissue_note(background, grid, image_hw: tuple[int, int], options: MapOptions) -> str | None:
    """What a single --image's run says where --skip-background's tissue test left out
    every cell, for one image of a batch (its map all "not computed", said nowhere)."""
    from graphconv.tiling import Tile

    if background is None or background.has_nodata:
        return None
    rows, cols = grid.map_hw(image_hw)
    if not background.is_blank(Tile((0, rows), (0, cols), (0, 0, *image_hw))):
        return None
    return (f"--skip-background {options.skip_background:g} found no tissue in it: its map holds no computed cell "
            "(the test looks for colour, or darkness in a grey image, on a bright background)")


def _raster_nodata(image: str, options: MapOptions) -> float | None:
    """--nodata for `image`: a raster's (a TIFF, a zarr array), not a picture's, all of
    whose pixels are data (a batch may hold both)."""
    from graphconv.sources import is_ome_zarr, is_tiff

    raster = is_tiff(image) or is_ome_zarr(image) or is_zarr_path(image)
    return options.nodata if raster else None


def _refuse_a_broken_link(image: str) -> None:
    """A symbolic link whose target is gone was reported as "image not found", though
    the name is there to see: say it is a broken link, and to what."""
    if os.path.islink(image) and not os.path.exists(image):
        raise GraphconvError(f"is a broken link: what it points to, {os.readlink(image)}, is not there", file=image)


def _first_frame_note(image: str) -> str | None:
    """What to say of an animated picture (a GIF, an animated PNG or WebP): only its first
    frame is mapped, which a user could not know."""
    from graphconv.images import frame_count

    frames = frame_count(image)
    return f"it has {frames} frames, and its map is of the first only" if frames > 1 else None


def _write_map(output: str, scores: np.ndarray, source, grid, contents: dict,
               unchanged: Callable[[], None] | None = None) -> None:
    """One image's map, atomically: .npy, or .tif (georeferenced where the image is a
    GeoTIFF; its cells' placement in it, and what its bands hold: `map_contents`)."""
    from graphconv.files import atomic_write
    from graphconv.georef import cell_placement, georeference_of_map, is_tiff_output, write_map_tiff

    if is_tiff_output(output):
        geo = georeference_of_map(source, grid.cell_area)
        placement = replace(cell_placement(source, grid.cell_area), contents=contents)
        atomic_write(output, lambda p: write_map_tiff(p, scores, geo, placement), suffix=".tif", unchanged=unchanged)
    else:
        atomic_write(output, lambda p: np.save(p, scores), suffix=".npy", unchanged=unchanged)


def _as_found(output: str, found: list[int] | None, image: str | None = None,
              stamp: list[int] | None = None) -> Callable[[], None]:
    """A check, run just before `output` is renamed into place, that it is as the batch
    found it before any work (`found`, its `file_stamp`, None: not there): two batches
    of like-named images (two cameras' IMG_0001.JPG) into one --output-dir each found
    the names free, then replaced each other's maps, both saying all were written. And
    that `image` is still the file read (`image_unchanged`)."""
    from graphconv.files import file_stamp

    def unchanged() -> None:
        if image is not None:
            image_unchanged(image, stamp)()
        if file_stamp(output) != found:
            raise WrittenMeanwhile(f"{WRITTEN_MEANWHILE} (two batches into "
                                   "one --output-dir at once?): left as that run wrote it; map this batch into a "
                                   "separate --output-dir (with --skip-existing, a map another run makes meanwhile "
                                   "as this one would is kept)", file=output)
    return unchanged


def _wasteful_tile_note(grid, image_hw: tuple[int, int], tile: int, budget: int, background) -> str | None:
    """`run --image`'s note on a --tile whose halos are most of the work, for a batch's
    image: 7 slides at --tile 400 took 575 s where 512 took 31, without a word."""
    from graphconv.tiling import plan_tiles, wasteful_tile_note

    return wasteful_tile_note(grid, image_hw, plan_tiles(grid, image_hw, tile), budget, background)


def image_unchanged(image: str, stamp: list[int] | None) -> Callable[[], None]:
    """A check, run just before a map is renamed into place, that `image` is the file its
    pixels were read from (`stamp`, its `image_stamp` before the read; None: no check): a
    slide copied over in place while it was mapped gave a map half of one slide and half
    of the other, which the run called written."""
    from graphconv.files import file_stamp

    def unchanged() -> None:
        if stamp is not None and file_stamp(image) != stamp:
            raise GraphconvError("the image file changed while it was mapped (rewritten or replaced during the "
                                 "run: its size, time or inode differ from when it was first read), so its map "
                                 "would mix two images; none was written: map it again once it is complete",
                                 file=image)
    return unchanged


def run_images(ref: ModelRef, images: Sequence[str], output_dir: str, options: MapOptions,
               tile: int | None = None, client=None,
               progress: Callable[[ImageResult], ImageResult | None] | None = None, output_format: str = "npy",
               base: str | None = None) -> list[ImageResult]:
    """Each image's map to `output_dir/<its folder below base>/<stem>.npy` (or `.tif`:
    `output_format`; see `output_names`), on the cluster when `client` is given; what
    became of each image listed in `output_dir/graphconv-maps.csv` (`manifest`).
    `progress` is called with each image's result as it comes, and may return it changed
    (an error added: the command's heatmap that failed), which the list then says."""
    from graphconv.files import file_stamp
    from graphconv.manifest import Manifest

    outputs = output_names(images, output_dir, output_format, base)
    manifest = Manifest(output_dir)
    spare_the_users_files(ref, images, outputs, options, tile, manifest.image_of)
    output_of = dict(zip(images, outputs))
    before = [file_stamp(output) for output in outputs]

    def done(result: ImageResult) -> None:
        written = result.output is not None and os.path.exists(result.output)
        settings = map_settings(ref, result.image, options)
        if result.image_stamp is not None:  # else the image's time against the map's tells an image edited since
            settings[IMAGE_STAMP] = result.image_stamp
        elif not written:  # a failure's row records which file failed (--skip-failed)
            settings[IMAGE_STAMP] = image_stamp(result.image)
        settings.update(_what_an_npy_holds(result))
        record = functools.partial(manifest.record, result.image, output_of[result.image], result.shape)
        record = functools.partial(record, placement=result.placement, top=result.top, top_by=options.top_by,
                                   damaged=result.damaged)
        record(result.error, written, settings)  # before its heatmap is drawn: a stop then keeps the map as made
        shown = progress(result) if progress is not None else None
        if shown is not None and shown.error != result.error:  # the command's, its heatmap's error added
            record(shown.error, written, settings)
    try:
        return _map_each(ref, images, outputs, before, options, tile, client, done)
    except BaseException:  # stopped: the maps finished whose rows the stop cut off are listed too
        for image, output, stamp in zip(images, outputs, before):
            manifest.record_kept(image, output, stamp, lambda image=image: map_settings(ref, image, options))
        raise
    finally:
        manifest.rewrite()


def _map_each(ref: ModelRef, images: Sequence[str], outputs: Sequence[str], found: Sequence[list[int] | None],
              options: MapOptions, tile: int | None, client, done: Callable[[ImageResult], None]) -> list[ImageResult]:
    """`run_images`' maps, here or on the cluster, `done` called with each as it comes;
    `found`: each output's `file_stamp` before any work. An image whose partial map
    another --resume batch is writing now (a requeued array task beside its
    predecessor, two tasks given overlapping lists) is tried again once the others are
    done or sent, then waiting for that run (`MapOptions.wait_for_other_runs`): its map
    kept when that run finishes it, or gone on from its tiles if it stopped. Both
    batches failed those images and exited 2, though every map ended written."""
    order = {image: i for i, image in enumerate(images)}
    stamps = dict(zip(images, found))
    output_of = dict(zip(images, outputs))
    waiting = replace(options, wait_for_other_runs=True)
    results = []
    if client is None:
        later = []
        for image in images:
            result = _one_image(ref, image, output_of[image], options, tile, None, stamps[image])
            if result.held_elsewhere:
                later.append(image)
                continue
            results.append(result)
            done(result)
        for image in later:
            results.append(_one_image(ref, image, output_of[image], waiting, tile, None, stamps[image]))
            done(results[-1])
        return sorted(results, key=lambda r: order[r.image])
    import distributed

    stop = distributed.Event(f"graphconv-stop-{os.getpid()}-{os.urandom(6).hex()}", client=client)

    def sent(image: str, with_options: MapOptions):
        output = output_of[image]
        return client.submit(_one_image_at, ref, image, output, os.path.abspath(image), os.path.abspath(output),
                             with_options, tile, stop.name, stamps[image], pure=False)
    futures = [sent(image, options) for image in images]
    pending = list(futures)
    try:
        while pending:
            later = []
            for _, result in results_with_workers(client, pending):
                if result.held_elsewhere:  # sent again now, behind the images queued
                    later.append(sent(result.image, waiting))
                    futures.append(later[-1])
                    continue
                results.append(_seen_here(result))
                done(results[-1])
            pending = later
    except BaseException:  # Ctrl-C, a scheduler's SIGTERM, a lost scheduler: stop the tasks too
        _stop_tasks(client, stop, futures)
        raise
    return sorted(results, key=lambda r: order[r.image])


def _stop_tasks(client, stop, futures) -> None:
    """Tasks not started are cancelled; those running on a cluster of the user's own
    (whose workers the command does not close) stop at their next tile, seeing `stop`
    set: they kept writing maps into the output folder after the command said it was
    interrupted, and a --resume run's lock on its partial map refused the next run."""
    try:
        stop.set()
        client.cancel(futures)
    except Exception:  # the scheduler gone: nothing more to tell it
        pass


def _one_image_at(ref: ModelRef, image: str, output: str, image_path: str, output_path: str, options: MapOptions,
                  tile: int | None, stop: str | None = None, found: list[int] | None = None) -> ImageResult:
    """`_one_image` on a worker, whose working folder is its own: the image and the map at
    the absolute paths the client resolved (relative ones went to the worker's folder:
    images "not found", maps written where the user never looks), the result under the
    names the user gave. `stop` names the distributed Event the command sets when it is
    stopped (`_stop_tasks`)."""
    result = _one_image(ref, image_path, output_path, options, tile, _stopped_on_this_worker(stop), found)
    # lexists: a broken link is seen here, broken for the command too, and its error says so already
    unseen = [path for path in (ref.path, image_path) if not os.path.lexists(path)] if result.error else []
    if unseen:  # the message read as if this machine lacked the file
        import socket
        result = replace(result, error=f"{result.error} (on the Dask worker on {socket.gethostname()}, which does not "
                                       f"see {unseen[0]}: the workers must reach the model, the images and the output "
                                       "folder at the same paths as the machine running the command)")
    return replace(result, image=image, output=output if result.output is not None else None)


def _stopped_on_this_worker(stop: str | None) -> Callable[[], bool] | None:
    """Whether the image task running in this thread is to stop at its next tile: the
    command set the Event named `stop` (Ctrl-C), or the scheduler no longer wants the
    task's result: the client that sent it is gone (killed with -9, it set nothing: its
    tasks went on writing maps no graphconv-maps.csv listed, and a resumed batch called
    an image failed while an orphan finished its map) or cancelled it. A worker cannot
    stop a running thread, so the task asks. None off a Dask worker (nothing to ask)."""
    try:
        import distributed
        worker = distributed.get_worker()
    except (ImportError, ValueError):
        return None
    key = worker.get_current_task()
    event = distributed.Event(stop) if stop is not None else None

    def stopped() -> bool:
        task = worker.state.tasks.get(key)
        return (task is None or task.state in ("cancelled", "released")
                or (event is not None and event.is_set()))
    return stopped


def _seen_here(result: ImageResult) -> ImageResult:
    """A worker's map that the client cannot see (the output folder is not shared with
    that worker's machine) is an error, not a success with an empty folder."""
    if result.error is None and result.output is not None and not os.path.exists(result.output):
        return replace(result, error=f"{result.output}: a worker wrote this map, but it is not here: the workers "
                                     "must reach --output-dir, the model and the images at the same paths as this "
                                     "machine (a shared file system)")
    return result


def output_names(images: Sequence[str], output_dir: str, output_format: str = "npy",
                 base: str | None = None) -> list[str]:
    """Where each image's map goes: `output_dir`, then the image's folder relative to
    `base` (the folder an --images pattern starts from: its folder, or a glob's part
    before the first wildcard), then `<stem>.npy` (or .tif). So a library of
    2023/01/IMG_0001.JPG and 2024/01/IMG_0001.JPG maps to 2023/01/IMG_0001.npy and
    2024/01/IMG_0001.npy, and a photo's name never depends on the other photos of the
    batch. Without `base`, each map goes straight into `output_dir`.

    Where another image with the same stem lies in the same folder on disk (a.jpg and
    a.png), in this batch or not, the map is named by stem and format, a_jpg.npy and
    a_png.npy: a run over a.png alone would otherwise write a.npy, and a later run over
    a.jpg replace it. An image `output_dir`'s list (graphconv-maps.csv) has a map of at
    that place keeps its map's name (`_listed_name`): a.png mapped to a.npy before a.jpg
    was added stays a.npy, where the rule alone renamed it a_png.npy and mapped it again
    beside the old map (a photo review). Images whose names differ only in the case of
    their extension (a.JPG and a.jpg) are numbered in the folder's order, a_jpg.npy and
    a_jpg_2.npy (the whole batch was refused). Names that still meet are refused, naming
    both images."""
    from graphconv.manifest import listed_maps

    siblings: dict[Path, list[str]] = {}
    listed = listed_maps(output_dir)
    owners = {os.path.abspath(output): image for image, output in listed.items()}
    names = []
    for image in images:
        folder = Path(output_dir) / _relative_folder(image, base)
        names.append(str(folder / (_listed_name(image, folder, output_format, listed)
                                   or _free_name(image, folder / f"{_map_stem(image, siblings)}.{output_format}",
                                                 owners))))
    _check_distinct(images, names)
    paths = [Path(p) for p in images]
    overwritten = {str(Path(n).resolve()) for n in names} & {str(p.resolve()) for p in paths}
    if overwritten:
        raise GraphconvError(f"the map of {Path(min(overwritten)).name} would replace that image: give another "
                             "--output-dir", file=min(overwritten))
    return names


def _relative_folder(image: str, base: str | None) -> Path:
    """The image's folder below `base` (nothing without one); a path that leaves it
    (a '..' after a wildcard) is refused rather than written outside --output-dir."""
    if base is None:
        return Path()
    relative = Path(os.path.relpath(os.path.dirname(os.path.abspath(image)), os.path.abspath(base)))
    if ".." in relative.parts:
        raise GraphconvError(f"is not inside {base}, the folder the --images pattern starts from, so its map has "
                             "no place in --output-dir", file=image)
    return relative


def _listed_name(image: str, folder: Path, output_format: str, listed: dict[str, str]) -> str | None:
    """The name of the map of `image` that --output-dir's list records as written (`listed`:
    maps by image), where it lies in `folder` and is one `output_names` gives an image of
    that stem and format (stem.npy or stem_jpg.npy); None otherwise."""
    recorded = listed.get(os.path.abspath(image))
    if recorded is None:
        return None
    path, image = Path(recorded), Path(image)
    stems = "|".join(map(re.escape, {_stem_of(image), image.stem}))  # image.stem: a.ome of before `_stem_of`
    named_so = re.fullmatch(rf"({stems})(_{re.escape(_format_of(image))}(_\d+)?)?", path.stem)
    if os.path.abspath(path.parent) != os.path.abspath(folder) or path.suffix != f".{output_format}" or not named_so:
        return None
    return path.name


def _free_name(image: str, path: Path, owners: dict[str, str]) -> str:
    """`path`'s name, or where --output-dir's list records it as the map of a namesake in
    the image's folder (`owners`: images by map), the first of name_2, name_3... that is
    not: a.jpg mapped to a_jpg.npy keeps it when a.JPG is added (a_jpg_2.npy). Another
    folder's image of that name (cameras reuse IMG_0001.JPG) is refused, naming both
    (`map_of_another_image`): a silent IMG_0001_2 would hide which card it came from."""
    name, number, folder = path, 1, os.path.dirname(os.path.abspath(image))
    while (owner := owners.get(os.path.abspath(name))) not in (None, os.path.abspath(image)) \
            and os.path.dirname(owner) == folder and os.path.exists(owner):
        number += 1
        name = path.with_name(f"{path.stem}_{number}{path.suffix}")
    return name.name


def _stem_of(image: Path) -> str:
    """What a map's name keeps of its image's: the name without its extension, nor the
    '.ome' of an OME-TIFF or OME-Zarr (slide.ome.tif -> slide, not slide.ome)."""
    stem = image.stem
    return stem[:-4] if stem.lower().endswith(".ome") and len(stem) > 4 else stem


def _format_of(image: Path) -> str:
    """What a map's name says of its image's format: 'jpg' of IMG_0001.JPG."""
    return image.suffix.lstrip(".").lower()


def _map_stem(image: str, siblings: dict[Path, list[str]]) -> str:
    """The image's stem, or stem_format where another image of that stem shares its folder
    (`output_names`); `siblings` caches each folder's listing."""
    path = Path(image)
    folder = path.parent
    if folder not in siblings:
        try:
            siblings[folder] = sorted(os.listdir(folder))
        except OSError:
            siblings[folder] = []
    namesakes = [name for name in siblings[folder]
                 if name != path.name and _stem_of(Path(name)) == _stem_of(path) and is_image_to_map(folder / name)]
    if not namesakes:
        return _stem_of(path)
    same_format = sorted(name for name in [*namesakes, path.name] if _format_of(Path(name)) == _format_of(path))
    place = same_format.index(path.name)
    return f"{_stem_of(path)}_{_format_of(path)}" + (f"_{place + 1}" if place else "")


def _check_distinct(images: Sequence[str], names: Sequence[str]) -> None:
    """Refuse two images whose maps would have one name, naming both."""
    first: dict[str, str] = {}
    for image, name in zip(images, names):
        if name in first:
            raise GraphconvError(f"{first[name]} and {image} would both write their map to {name}: rename one, or "
                                 "map them in separate runs with separate --output-dir")
        first[name] = image


def image_suffixes() -> tuple[str, ...]:
    """The names of images --images reads: pictures (Pillow), TIFFs and zarr arrays."""
    from graphconv.images import PICTURE_SUFFIXES
    from graphconv.sources import TIFF_SUFFIXES
    return PICTURE_SUFFIXES + TIFF_SUFFIXES + (".zarr",)


def is_image_to_map(path: str | Path) -> bool:
    """Whether --images takes `path` for an image (`leaving_out` finds no reason not to;
    a name of another format needs no reason, nor its folder's list of maps read)."""
    return Path(path).suffix.lower() in image_suffixes() and leaving_out(path) is None


NOT_AN_IMAGE_FORMAT = "not of an image format graphconv reads"  # why --images leaves out a .heic, a .nef
WRITTEN_BY_GRAPHCONV = "written by graphconv (its maps, heatmaps and lists of maps)"
HIDDEN = "hidden (a name starting with '.')"


def leaving_out(path: str | Path, lists: dict | None = None) -> str | None:
    """Why --images does not take `path` for an image, or None: a name of a format
    graphconv does not read, a hidden name (starting with '.': macOS's ._photo.jpg
    AppleDouble files, which shells leave out of a * too), or a file graphconv wrote (a
    .tif map, a heatmap, a .npy map its folder's list of maps names). `lists` keeps
    each folder's list as read, for a call per file of one folder."""
    from graphconv.manifest import LABELS_NAME, MANIFEST_NAME

    path = Path(path)
    if path.name in (MANIFEST_NAME, LABELS_NAME):
        return WRITTEN_BY_GRAPHCONV
    if path.name.startswith("."):  # before the format: a .DS_Store was counted as a file of no suffix
        return HIDDEN
    if path.suffix.lower() not in image_suffixes():
        return WRITTEN_BY_GRAPHCONV if _listed_map(path, {} if lists is None else lists) else NOT_AN_IMAGE_FORMAT
    if is_graphconv_output(path):
        return WRITTEN_BY_GRAPHCONV
    return None


def _listed_map(path: Path, lists: dict) -> bool:
    """Whether `path` is a .npy or .npz map the list of maps in its folder names (a .npy
    file says nothing of who wrote it: a 'dir/*' rerun counted an earlier run's maps as
    files of an unread format)."""
    from graphconv.manifest import MANIFEST_NAME, Manifest

    if path.suffix.lower() not in (".npy", ".npz"):
        return False
    if path.parent not in lists:
        lists[path.parent] = Manifest(path.parent) if (path.parent / MANIFEST_NAME).is_file() else None
    return lists[path.parent] is not None and lists[path.parent].lists(str(path))


def is_graphconv_output(path: str | Path) -> bool:
    """Whether `path` is a .tif or .zarr map or a heatmap an earlier run wrote (read from
    its header): a rerun into the photos' own folder must not map them as photos (a
    .zarr map there failed every later batch: "an image array of shape (1, 11, 69, 94)")."""
    from graphconv.georef import is_graphconv_map
    from graphconv.images import PICTURE_SUFFIXES, is_graphconv_heatmap

    suffix = Path(path).suffix.lower()
    if suffix in (".tif", ".tiff"):
        return is_graphconv_map(str(path))
    if suffix == ".zarr":
        return _is_graphconv_zarr_map(path)
    return suffix in PICTURE_SUFFIXES and is_graphconv_heatmap(path)


def _is_graphconv_zarr_map(path: str | Path) -> bool:
    from graphconv.tiling import ZARR_MAP_ATTRIBUTE

    try:
        import zarr
        return ZARR_MAP_ATTRIBUTE in zarr.open(str(path), mode="r").attrs
    except Exception:  # no zarr, not a zarr store, a damaged one: not a map of ours; its own task says the rest
        return False


def is_a_map_graphconv_wrote(path: str) -> bool:
    """Whether the existing output `path` says an earlier run wrote it, and so may be
    replaced where a user's own file must not be: a .tif map says so in its
    description, a zarr map in its `graphconv` attribute. An .npy cannot say who wrote
    it: `check_replaceable` judges it by what this run is about to write there."""
    if path.lower().endswith((".tif", ".tiff")):
        from graphconv.georef import is_graphconv_map
        return is_graphconv_map(path)
    if is_zarr_path(path):
        return _stored_array_header(path) is not None
    return False


def check_replaceable(path: str, dtype, shape: tuple[int, ...] | None = None) -> None:
    """Refuse, before any work, to replace an existing output that is not this run's to
    replace. A .tif or .zarr map says it is graphconv's (`is_a_map_graphconv_wrote`).
    An .npy cannot: it is replaced only when it holds exactly the type and `shape` this
    run writes there (an earlier run of the same command), never because it merely
    looks like a map: a user's (1, 3, H, W) float32 input or (1, 1000) reference vector
    is a 4-D or 2-D float32 array too, and was replaced. `shape` None: the .npy is
    checked later, when the shape is known (`check_replaceable` again)."""
    from graphconv.files import refuse_a_special_file

    target = path.rstrip("/")
    refuse_a_special_file(target, path)
    if not os.path.exists(target) or (os.path.isdir(target) and not os.listdir(target)):
        return  # nothing there to lose (an empty folder named map.zarr, made ahead)
    if target.lower().endswith((".tif", ".tiff", ".zarr")):
        if not is_a_map_graphconv_wrote(path):
            raise GraphconvError("is already there and is not a map graphconv wrote: graphconv replaces only its "
                                 "own maps (delete it or choose another name)", file=path)
        return
    if shape is None or _holds_exactly(path, dtype, shape):
        return
    header = _stored_array_header(path)
    held = f"{header[0]} {tuple(header[1])}" if header else "no array graphconv can read (not a .npy file?)"
    raise GraphconvError(f"is already there and holds {held}, not this run's {np.dtype(dtype)} {tuple(shape)}: "
                         "graphconv replaces a .npy only with a map of the same shape and type (delete it or "
                         "choose another name)", file=path)


def image_map_shape(model, grid, image: str, options: MapOptions, tile: int | None) -> tuple[np.dtype, tuple]:
    """(dtype, shape) of the map `_one_image` writes for `image`, from its size alone (a
    TIFF's or zarr's header; a picture's, upright, as `images.image_size` reads it, not
    its pixels: a rerun over 10,000 photos decoded each one here first): what an
    existing .npy there must hold to be replaced."""
    from graphconv.tiling import model_map_transform

    _, channels, dtype = model_map_transform(model, options.reduce, options.classes)
    if options.scales:
        return np.dtype(np.float32), (1, channels)  # one class vector (`_at_scales`)
    rows, cols = grid.map_hw(size_as_read(model, image, options))
    whole = tile is None and options.skip_background is None and options.crops is None
    if whole and model.returns_vectors and (rows, cols) == (1, 1):
        return dtype, (1, channels)  # an uncompiled classifier's vector, as Model.run returns it
    return dtype, (1, channels, rows, cols)


IMAGE_STAMP = "image_stamp"  # a .tif map's (an .npy's row's) record of its image file's `files.file_stamp` when read


def image_stamp(image: str) -> list[int] | None:
    """The image file's size, time and inode (`files.file_stamp`), which a .tif map
    records: --skip-existing makes the map again once the image was edited."""
    from graphconv.files import file_stamp
    return file_stamp(image)


def holds_its_map(ref: ModelRef, model, image: str, output: str, options: MapOptions, tile: int | None,
                  made_with: Callable[[str], dict | None] = lambda output: None) -> bool:
    """Whether `output` holds the map this run would write for `image` already
    (--skip-existing): an .npy of exactly its type and shape, made with this run's
    `map_settings` as its --output-dir's list records them (`made_with`, the
    manifest's: another model of as many classes, or another --resize, gave a map of
    that shape, kept as this run's; one no row records, an older graphconv's or one
    whose row a kill cut off, kept the old weights' map after a retrain), a .tif map graphconv wrote
    of this image, model, classes and values, read at these --bands, --level and --downsample
    and leaving out the cells these --skip-background, --max-nodata and --nodata leave out,
    where it states them (`georef.read_as`; maps written before it did, do not). Maps are renamed into place only once whole, so
    such a file is a finished map; a stale one (another --classes, --reduce or model, an
    image edited since: `_image_changed`), another image's of the same name
    (`map_of_another_image`) or a user's own file of that name is not."""
    from graphconv.georef import is_tiff_output, map_contents, stated_placement

    if not os.path.exists(output) or map_of_another_image(image, output):
        return False
    if is_tiff_output(output):
        stated = stated_placement(output) or {}
        if _image_changed(image, output, stated.get(IMAGE_STAMP)):
            return False
        expected = map_contents(image, ref.path, model, options.classes, options.reduce,
                                left_out=left_out_record(options, image))
        read = {"bands": list(options.bands) if options.bands is not None else None,
                "cells_left_out": expected["cells_left_out"]}
        if isinstance(stated.get("cells_left_out"), dict):  # a map of before --nodata was recorded: none given
            stated["cells_left_out"] = {"nodata": None, **stated["cells_left_out"]}
        if options.mpp is None:  # else the level and factor are the slide's to choose
            read.update(level=options.level, downsample=float(options.downsample))
        if "resize" in stated or "level" in stated:  # a map that states how it was read states any resize
            stated.setdefault("resize", None)
            read["resize"] = list(options.resize) if options.resize is not None else None
            stated.setdefault("pad_image", None)  # and any border
            read["pad_image"] = options.pad_image
        return (all(stated.get(key) == expected[key] for key in ("model", "model_digest", "classes", "values"))
                and all(stated.get(key) == value for key, value in _ref_settings(ref).items())
                and all(stated[key] == value for key, value in read.items() if key in stated))
    try:
        expected = image_map_shape(model, options.grid(model), image, options, tile)
    except (GraphconvError, OSError, ValueError):
        return False  # an image that cannot be read: its own task says why
    if not _holds_exactly(output, *expected):
        return False
    recorded = made_with(output)  # None: no row records what made it (an older graphconv's, a kill before its row)
    if recorded is None or _image_changed(image, output, recorded.get(IMAGE_STAMP)):
        return False
    expected = json.loads(json.dumps(map_settings(ref, image, options)))
    return all(recorded.get(key) == value for key, value in expected.items())


def _ref_settings(ref: ModelRef) -> dict:
    """The model options beside its file that change a map: --weights, --crop-size, --task,
    --activation."""
    return {"weights": ref.weights and os.path.abspath(ref.weights),
            "crop_size": list(ref.crop_size) if ref.crop_size else None, "task": ref.task,
            "activation": ref.activation}


def loaded_with(ref: ModelRef) -> dict:
    """`_ref_settings` given, for a .tif map to state (a map of before them states none)."""
    return {key: value for key, value in _ref_settings(ref).items() if value is not None}


def map_settings(ref: ModelRef, image: str, options: MapOptions) -> dict:
    """What a map of `image` is made with, beside the image: the model file and its
    contents' digest (a model compiled again in place is another), the classes
    and values kept, the cells left out and how the image is read. An .npy's row in
    graphconv-maps.csv records them (`manifest`), as a .tif map states its own, for
    --skip-existing to tell a map made otherwise (`holds_its_map`)."""
    from graphconv.georef import digest_of_model
    return {"model": os.path.abspath(ref.path), "model_digest": digest_of_model(ref.path, worker_model(ref)),
            **_ref_settings(ref),
            "classes": list(options.classes) if options.classes else None,
            "reduce": options.reduce, "crops": list(options.crops) if options.crops else None,
            "cells_left_out": left_out_record(options, image), "level": options.level,
            "downsample": float(options.downsample), "mpp": options.mpp,
            "bands": list(options.bands) if options.bands else None,
            "resize": list(options.resize) if options.resize else None, "pad_image": options.pad_image,
            "scales": {"sizes": list(options.scales), "flip": options.flip, "reduce": options.scales_reduce}
            if options.scales else None}


NPY_CONTENTS = ("model_classes", "output_activation", "labels", "tile_plan")  # `map_contents` beyond `map_settings`


def _what_an_npy_holds(result: ImageResult) -> dict:
    """What an .npy map's row records beside `map_settings` (which --skip-existing
    compares), for `graphconv cells` to read the map as a .tif map's own statement: the
    model's number of classes and output activation (whether its kept scores make a class
    the best: `cells.StoredMap.class_rule`), the kept classes' labels and, over a
    georeferenced image, the map's georeference (the cells' polygons in its CRS)."""
    from graphconv.georef import georeference_of_placement, is_tiff_output

    placement = result.placement
    if placement is None or result.output is None or is_tiff_output(result.output):
        return {}
    contents = placement.contents or {}
    held = {key: contents[key] for key in NPY_CONTENTS if key in contents}
    geo = georeference_of_placement(placement)
    return {**held, "map_georeference": geo.as_dict()} if geo is not None else held


def _image_changed(image: str, output: str, recorded_stamp: list[int] | None) -> bool:
    """Whether the image file is not the one its map was made from: its `image_stamp`
    is not the one the map's row recorded, or, where none was (a row of an older
    graphconv's, a batch stopped before its row), it was modified after the map was
    written. The stamp first: an image whose time is in the future (a camera's clock, a
    copy from a host whose clock is ahead) was taken for edited by every later batch."""
    if recorded_stamp is not None:
        return recorded_stamp != image_stamp(image)
    return _image_changed_since(image, output)


def _image_changed_since(image: str, output: str) -> bool:
    """Whether the image file was modified after its map was written (a photo edited
    since): then the map is stale, whatever it records, for a map that records no
    `image_stamp`."""
    try:
        return os.stat(image).st_mtime_ns > os.stat(output.rstrip("/")).st_mtime_ns
    except OSError:
        return False  # an image that cannot be read: its own task says why


def map_of_another_image(image: str, output: str) -> str | None:
    """The image an existing .tif map at `output` records it was made from, where that is
    not `image` (cameras reuse IMG_0001.JPG: two cards' photos mapped into one folder in
    two runs); None otherwise, and for an .npy, which records no image."""
    from graphconv.georef import is_tiff_output, stated_placement

    if not is_tiff_output(output) or not os.path.isfile(output):
        return None
    return another_image((stated_placement(output) or {}).get("image"), image)


def another_image(recorded: str | None, image: str) -> str | None:
    """`recorded`, the image a map says it was made from, where that is not `image`; None
    where it is, by another path too (a link, a folder of links a job array's task was
    given, a mount reached through a symlink: these refused graphconv's own maps)."""
    if not recorded or os.path.abspath(recorded) == os.path.abspath(image):
        return None
    with contextlib.suppress(OSError):
        if os.path.samefile(recorded, image):
            return None
    return recorded


def left_out_record(options: MapOptions, image: str) -> dict:
    """What `image`'s map records of the cells it leaves out (`georef.left_out_settings`):
    --nodata where the image is a raster it applies to (`_raster_nodata`)."""
    from graphconv.georef import left_out_settings
    return left_out_settings(options.skip_background, options.max_nodata, _raster_nodata(image, options),
                             options.mask)


def _holds_exactly(path: str, dtype, shape: tuple[int, ...]) -> bool:
    """Whether the .npy (or zarr map) at `path` holds an array of exactly `dtype` and `shape`."""
    header = _stored_array_header(path)
    return header is not None and np.dtype(header[0]) == np.dtype(dtype) and tuple(header[1]) == tuple(shape)


def size_as_read(model, image: str, options: MapOptions) -> tuple[int, int]:
    """(H, W) `_one_image` maps of `image`: a TIFF's or zarr's level, read coarser or not,
    from its metadata; a picture's from its header (decoding one takes 5x as long); with
    --pad-image's border."""
    from graphconv.sources import Downsampled, is_ome_zarr, is_tiff, padded_image

    if is_tiff(image) or is_ome_zarr(image) or is_zarr_path(image):
        source = options.open_image(model, image)
        return source.height, source.width
    from types import SimpleNamespace

    from graphconv.images import image_size, resized_size
    height, width = image_size(image) if options.resize is None else resized_size(options.resize, image)
    read = SimpleNamespace(height=height, width=width, path=image)
    if options.downsample > 1:
        read = Downsampled(read, options.downsample)
    read = padded_image(read, options.pad_image, options.grid(model).cell_area)
    return read.height, read.width


def spare_the_users_files(ref: ModelRef, images: Sequence[str], outputs: Sequence[str], options: MapOptions,
                          tile: int | None, image_of: Callable[[str], str | None] = lambda output: None) -> None:
    """Refuse, before any work, a batch whose output names an existing file this run may
    not replace (`check_replaceable`), or a .tif map of another image than the one mapped
    there now (`map_of_another_image`). An .npy an earlier batch wrote, as its --output-dir's
    `manifest` says (`image_of`: the image it was made from), is replaced whatever shape it
    holds, and refused as a .tif map is where it was made from another image. An image that cannot
    be read is left to its own task to report (it writes nothing). The model is this
    process's `worker_model`, which the images run here then reuse."""
    for image, output in zip(images, outputs):
        if not os.path.exists(output.rstrip("/")):
            continue
        listed = image_of(output) if output.lower().endswith(".npy") else None
        if listed is not None:
            _refuse_another_images_map(image, output, another_image(listed, image))
            continue
        check_replaceable(output, np.float32)
        _refuse_another_images_map(image, output, map_of_another_image(image, output))
        if output.lower().endswith(".npy"):
            model = worker_model(ref)
            try:
                dtype, shape = image_map_shape(model, options.grid(model), image, options, tile)
            except (GraphconvError, OSError, ValueError):
                continue  # a bad image: its own task reports it, and writes nothing
            check_replaceable(output, dtype, shape)


def _refuse_another_images_map(image: str, output: str, recorded: str | None) -> None:
    """A map made from another image, `recorded` (two cards' IMG_0001.JPG, one
    --output-dir; a .tif map's own record, an .npy's in the manifest), is never replaced:
    that image's map would be lost without a word."""
    from graphconv.errors import shown_path

    if recorded is None:
        return
    raise GraphconvError(f"is the map of {shown_path(recorded)}, another image than {image} (cameras reuse names "
                         "such as IMG_0001.JPG): map this batch into a separate --output-dir, or delete that map "
                         "if it is this image's, moved", file=output)


def _stored_array_header(path: str) -> tuple[np.dtype, tuple[int, ...]] | None:
    """(dtype, shape) of an .npy file or a zarr map, read from its header; None when it
    is neither (a zarr array graphconv did not write included), or unreadable."""
    if is_zarr_path(path):
        try:
            import zarr
            from graphconv.tiling import ZARR_MAP_ATTRIBUTE
            array = zarr.open_array(path.rstrip("/"), mode="r")
            if ZARR_MAP_ATTRIBUTE not in array.attrs:
                return None  # a user's array: every zarr map graphconv writes says so
            return np.dtype(array.dtype), tuple(array.shape)
        except Exception:  # not a zarr array (a group, a folder of something else), or no zarr installed
            return None
    from graphconv.arrays import npy_header
    try:
        with open(path, "rb") as fp:
            dtype, shape, _ = npy_header(fp, "a map", Path(path))
    except (OSError, ValueError, GraphconvError):
        return None
    return dtype, shape
