"""What the CUDA GEMM kernels compile to, without a GPU: per tile shape, ptxas's registers
and spills for a target architecture, and the instruction mix of the main loop (FFMAs
against everything else) read from the SASS.

    pip install 'numba-cuda[cu13]' nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm  # NVVM, nvJitLink, tools
    python benchmarks/cuda_sass.py [--arch sm_90] [--sass-dir DIR]

The kernels are compiled to PTX by numba-cuda (which asks a device for its compute
capability: here it is told the target's instead), linked to a cubin by nvJitLink
(whose log is ptxas's), and disassembled by cuobjdump. The main loop is the body
of the backward branch holding the most FFMAs: the staging of the next step's loads
and the 8 k-steps of the current one. A session without a GPU can still see whether a
change to `graphconv/ops/gemm_cuda.py` spills, keeps its LDS.128 loads and what share
of the loop's instructions are FMAs (issue 21).
"""
from __future__ import annotations

import argparse
import collections
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIGNATURE = "void(float32[::1], float32[::1], int32[::1], float32[::1], float32[::1], float32[::1], int64[::1])"
LISTING = re.compile(r"^\s+/\*([0-9a-f]{4,})\*/\s+(.*?);", re.M)  # (address, instruction) of cuobjdump -sass
INSTRUCTION = re.compile(r"(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)")
BRANCH = re.compile(r"\bBRA\s+(?:`\()?(?:0x)?([0-9a-f]+)")


def link(ptx: str, arch: str, max_registers: int | None = None) -> tuple[bytes, str]:
    """(cubin, ptxas's verbose log) for `ptx` through nvJitLink."""
    from cuda.bindings import nvjitlink
    options = [f"-arch={arch}", "-verbose", "-O3"] + ([f"-maxrregcount={max_registers}"] if max_registers else [])
    handle = nvjitlink.create(len(options), options)
    try:
        data = ptx.encode()
        nvjitlink.add_data(handle, nvjitlink.InputType.PTX, data, len(data), "kernel")
        nvjitlink.complete(handle)
        cubin = bytearray(nvjitlink.get_linked_cubin_size(handle))
        nvjitlink.get_linked_cubin(handle, cubin)
        log = bytearray(nvjitlink.get_info_log_size(handle))
        nvjitlink.get_info_log(handle, log)
        return bytes(cubin), log.decode(errors="replace")
    finally:
        nvjitlink.destroy(handle)


def cuda_tool(name: str) -> str:
    """The path of a CUDA binary tool: on PATH, or from its nvidia-cuda-<name> wheel
    (whose files are not marked executable)."""
    tool = shutil.which(name)
    if tool is None:
        import nvidia
        found = sorted(Path(next(iter(nvidia.__path__))).rglob(name))
        if not found:
            raise SystemExit(f"no {name}: pip install nvidia-cuda-{name}")
        tool = str(found[0])
        Path(tool).chmod(0o755)
    return tool


def sass(cubin: bytes) -> str:
    """cuobjdump's disassembly of `cubin` (it runs nvdisasm)."""
    env = {**os.environ, "NVDISASM_PATH": str(Path(cuda_tool("nvdisasm")).parent)}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        result = subprocess.run([cuda_tool("cuobjdump"), "-sass", f.name], capture_output=True, text=True, env=env)
        if result.returncode:
            raise SystemExit(f"cuobjdump failed: {result.stderr.strip()}")
        return result.stdout


def main_loop_mix(text: str) -> collections.Counter:
    """Instruction counts of the kernel's main loop: the body of the backward branch
    whose body holds the most FFMAs (the k loop; its 8 k-steps are unrolled inside)."""
    listing = [(int(address, 16), op) for address, op in LISTING.findall(text)]
    index = {address: i for i, (address, _) in enumerate(listing)}
    best = collections.Counter()
    for i, (address, op) in enumerate(listing):
        target = BRANCH.search(op)
        if target and int(target.group(1), 16) < address and int(target.group(1), 16) in index:
            ops = (INSTRUCTION.match(o) for _, o in listing[index[int(target.group(1), 16)]:i + 1])
            body = collections.Counter(match.group(1) for match in ops if match)
            if body["FFMA"] > best["FFMA"]:
                best = body
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90", help="target architecture (sm_90: H100, H200)")
    parser.add_argument("--sass-dir", help="also save each tile's SASS here")
    parser.add_argument("--max-registers", type=int, help="cap every tile's registers a thread (else each tile's "
                        "own Tile.max_registers)")
    args = parser.parse_args()
    capability = (int(args.arch[3:-1]), int(args.arch[-1]))
    import numba.cuda.dispatcher as dispatcher
    from numba import cuda

    class Target:  # numba-cuda compiles device functions for the current device's capability
        compute_capability = capability

    dispatcher.get_current_device = lambda: Target()
    from graphconv.ops.gemm_cuda import TILES, gemm_kernel

    print("| tile | gather | threads | registers | spill bytes | main loop: FFMA | LDS.128 | other | FFMA share |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    # (gather, its kernel's flags as GemmLayer picks them): a tap-table lookup per value;
    # per k-step, with 32-bit offsets; the same with rows in whole tiles (no bounds checks
    # on the weights' loads); and that with 64-bit offsets (arrays of 2^31 elements).
    gathers = (("a tap a value", (False, False, False)), ("a tap a step", (True, False, True)),
               ("a tap a step, whole rows", (True, True, True)), ("a tap a step, whole rows, 64-bit", (True, True, False)))
    for tile, (gather, flags) in itertools.product(TILES, gathers):
        ptx, _ = cuda.compile_ptx(gemm_kernel(tile, *flags).py_func, SIGNATURE, cc=capability)
        cubin, log = link(ptx, args.arch, args.max_registers or tile.max_registers)
        registers = re.search(r"Used (\d+) registers", log).group(1)
        spills = re.search(r"(\d+) bytes spill stores", log).group(1)
        text = sass(cubin)
        if args.sass_dir:
            Path(args.sass_dir).mkdir(parents=True, exist_ok=True)
            (Path(args.sass_dir) / f"gemm_{tile.rows}x{tile.cols}_{'_'.join(map(str, map(int, flags)))}.sass"
             ).write_text(text)
        mix = main_loop_mix(text)
        total = sum(mix.values())
        print(f"| {tile.rows}x{tile.cols} ({tile.thread_rows}x{tile.thread_cols} a thread) | {gather} | {tile.threads} | "
              f"{registers} | {spills} | {mix['FFMA']} | {mix['LDS.128']} | {total - mix['FFMA'] - mix['LDS.128']} | "
              f"{mix['FFMA'] / max(total, 1):.0%} |", flush=True)


if __name__ == "__main__":
    main()
