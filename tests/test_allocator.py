"""configure_process() tells glibc to keep freed memory (no page faults on the next
run's activations) unless the user opts out; elsewhere, and without it, nothing changes."""
import os
import subprocess
import sys

import pytest

from graphconv import allocator

GLIBC = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")


def _applied_in_fresh_process(configure: bool = True, **env) -> str:
    code = ("import numpy as np, graphconv; from graphconv import allocator; "
            + ("graphconv.configure_process(); " if configure else "")
            + "graphconv.compile_model('specs/lenet.yaml').executor('cpu').run(np.zeros((1, 1, 32, 32), "
              "np.float32)); print(allocator._applied)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, **env}, cwd=os.path.dirname(os.path.dirname(__file__)))
    return result.stdout.strip()


@pytest.mark.skipif(not GLIBC, reason="only glibc has mallopt")
def test_configure_process_keeps_freed_memory():
    assert _applied_in_fresh_process() == "True"


def test_running_without_configure_process_leaves_malloc_alone():
    assert _applied_in_fresh_process(configure=False) == "None"


def test_the_user_can_opt_out():
    assert _applied_in_fresh_process(GRAPHCONV_KEEP_MEMORY="0") == "False"


def test_it_is_applied_once(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setattr(allocator, "_configure_glibc", lambda: calls.append(1) or True)
    assert allocator.keep_freed_memory() and allocator.keep_freed_memory()
    assert calls == [1]


@pytest.mark.skipif(not GLIBC, reason="only glibc has malloc_trim")
def test_released_memory_leaves_the_process():
    """Freed blocks kept in the heap stay resident until `release_freed_memory` hands
    their pages back: what the runtime does when larger inputs replace its buffers."""
    code = ("import numpy as np; from graphconv import allocator; allocator.keep_freed_memory(); "
            "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * 4096 >> 20; "
            "big = np.ones(50 << 20, np.float32); after = np.ones(1 << 10, np.float32); del big; "
            "kept = rss(); allocator.release_freed_memory(); print(kept - rss())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(result.stdout) >= 150  # of the 200 MB freed


def test_the_runtime_releases_memory_only_when_larger_inputs_replace_its_buffers(monkeypatch):
    import numpy as np
    import graphconv
    from graphconv import runtime

    released = []
    monkeypatch.setattr(runtime, "release_freed_memory", lambda: released.append(1))
    from conftest import SPECS

    executor = graphconv.compile_model(SPECS / "lenet.yaml").executor("cpu")
    for side, replaced in ((32, 0), (32, 0), (64, 1), (32, 1), (64, 1), (96, 2), (64, 2)):
        executor.run(np.zeros((1, 1, side, side), np.float32))
        assert len(released) == replaced, side
