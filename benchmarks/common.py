"""Helpers the benchmark scripts share: thread setup, timing, and README sections."""
from __future__ import annotations

import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "benchmarks" / "README.md"


# Seconds of rest before each timed run where several runtimes alternate: onnxruntime's
# workers spin for a while after a run (its default), and without the rest they steal the
# cores from whatever runs next (measured: onnxruntime's profiled AlexNet-FCN summed to
# 89 ms right after the other runners, 62 ms on its own, which is also its plain time;
# graphconv's ResNet-50 took 94 ms right after onnxruntime, 58 ms after a rest).
PAUSE = 0.05


def rested_run(fn) -> float:
    """Wall seconds of fn() after the PAUSE and one untimed fn() of its own: the steady
    state of a runtime that has just run, as when it maps a slide tile after tile. The
    untimed run matters on VMs: there a parallel loop that finds numba's OpenMP workers
    asleep after the pause cost 0.2 ms where it took 2 us when they were awake, and on
    one such VM the AlexNet classifier took 17-29 ms straight after the pause against
    11-12 ms run after run (docs/performance.md, session 20); onnxruntime, whose workers
    spin through a run, lost far less, so timing first runs measured the VM's wake-ups."""
    time.sleep(PAUSE)
    fn()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def threads_text(threads: int) -> str:
    """"1 thread", "2 threads": the tables' headers said "1 threads"."""
    return f"{threads} thread{'' if threads == 1 else 's'}"


def machine() -> str:
    """The CPU as the tables name it: its model name and vector extensions where Linux
    says them ("Intel(R) Xeon(R) Processor, AVX-512, x86_64"), else the architecture.
    Results differ by more than noise between machines (an Intel core with two 512-bit
    FMA units against a Zen 4's halves of one), so each table says which it ran on."""
    arch = platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return arch
    name = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", info, re.M)
    vector = ""
    if flags:
        present = set(flags.group(1).split())
        vector = "AVX-512" if "avx512f" in present else "AVX2" if "avx2" in present else ""
    model = name.group(1).strip() if name else ""
    core = _core_name()
    if core and model and core not in model:  # a VM's "AMD EPYC" says nothing of Zen 4 or Zen 5
        model = f"{model} ({core})"
    return ", ".join(part for part in (model, vector, arch) if part)


def _core_name() -> str:
    """The core LLVM compiles numba's kernels for ("znver4", "znver5", "sapphirerapids"):
    a Zen 4 runs a 16-lane FMA as two halves where a Zen 5 runs it whole, and the same
    VM's "AMD EPYC" ran graphconv's AVX-512 kernels half as fast on the one as the other."""
    try:
        from llvmlite import binding
        return binding.get_host_cpu_name()
    except Exception:  # no llvmlite (numba not installed): the model name alone
        return ""


def pin_threads(threads: int | None) -> int:
    """Give numba, OpenBLAS and PyTorch the same thread count, and apply graphconv's
    process settings as the CLI does. Must run before any of them is imported: the
    BLAS and OpenMP pools size themselves when they load."""
    threads = threads or os.cpu_count() or 1
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[name] = str(threads)
    sys.path.insert(0, str(ROOT))
    import graphconv
    graphconv.configure_process()
    return threads


def run_times(fn, repeats: int) -> list[float]:
    """Wall seconds of `repeats` calls of fn() after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median_ms(fn, repeats: int) -> float:
    """Median wall time of fn() in ms over `repeats` runs after one warm-up run."""
    return statistics.median(run_times(fn, repeats)) * 1e3


def load_torch(threads: int):
    """PyTorch with `threads` intra-op threads, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def write_section(name: str, text: str, path: Path = README) -> None:
    """Replace the README section between this benchmark's markers (appending it the
    first time), so each script regenerates its own part and leaves the others."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    new = pattern.sub(lambda _: block, old) if pattern.search(old) else old.rstrip() + "\n\n" + block + "\n"
    path.write_text(new)
