"""Writing outputs: nothing lost, nothing half-written, never a file graphconv did not make.

The data-loss cases run the real command in a subprocess; the kill cases use the
fault-injection hook (GRAPHCONV_FAULT_KILL_AT) to SIGKILL the process at each point
of a model save and show the folder still holds a complete model."""
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import graphconv
from graphconv.errors import GraphconvError
from graphconv.files import FAULT_ENV, TMP_PREFIX, atomic_write, check_writable, output_folders
from conftest import SPECS

LENET = SPECS / "lenet.yaml"


def graphconv_cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "graphconv", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=300)


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_compile_refuses_a_folder_it_did_not_write_and_touches_nothing(tmp_path):
    project = tmp_path / "proj"
    (project / "data").mkdir(parents=True)
    (project / "thesis.tex").write_text("years of work")
    before = snapshot(project)
    result = graphconv_cli("compile", LENET, "-o", project)
    assert result.returncode == 2 and result.stdout == ""
    assert "proj: is a folder that graphconv did not write" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert snapshot(project) == before and (project / "data").is_dir()


@pytest.mark.parametrize("output", [".", ".."])
def test_compile_into_the_current_or_parent_folder_is_refused_when_they_hold_other_files(tmp_path, output):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    (work / "keep.txt").write_text("x")
    (tmp_path / "a" / "keep.txt").write_text("y")
    result = graphconv_cli("compile", LENET, "-o", output, cwd=work)
    assert result.returncode == 2 and "graphconv did not write" in result.stderr
    assert (work / "keep.txt").read_text() == "x" and (tmp_path / "a" / "keep.txt").read_text() == "y"


def test_empty_output_path_is_an_error(tmp_path):
    result = graphconv_cli("compile", LENET, "-o", "", cwd=tmp_path)
    assert result.returncode == 2 and "argument --output/-o: an empty path" in result.stderr
    assert result.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_recompiling_keeps_the_users_files_and_removes_the_old_weights(tmp_path):
    model = tmp_path / "m"
    graphconv.compile_model(LENET).save(model)
    (model / "notes.txt").write_text("mine")
    (model / "mytrained.npz").write_bytes(b"user data")
    old_weights = {p.name for p in model.glob("weights-*.npz")}
    changed = graphconv.compile_model(LENET)
    changed.graph.set_weights("fc5", bias=np.ones(10, np.float32))
    changed.save(model)
    assert (model / "notes.txt").read_text() == "mine"
    assert (model / "mytrained.npz").read_bytes() == b"user data"
    new_weights = {p.name for p in model.glob("weights-*.npz")}
    assert len(new_weights) == 1 and new_weights != old_weights, "the superseded weights file is gone"
    np.testing.assert_array_equal(graphconv.load(model).graph.node("fc5").weights["bias"], 1)


def test_unchanged_weights_are_not_rewritten(tmp_path):
    model = tmp_path / "m"
    graphconv.compile_model(LENET).save(model)
    weights, = model.glob("weights-*.npz")
    stamp = weights.stat().st_mtime_ns
    graphconv.compile_model(LENET, output_stride=2).save(model)
    assert weights.stat().st_mtime_ns == stamp
    assert graphconv.load(model).graph.meta["compiled"]["output_stride"] == 2


def test_a_model_folder_written_by_the_old_layout_is_replaced(tmp_path):
    model = tmp_path / "m"
    graph = graphconv.load_spec(LENET)
    graphconv.save_model(graph, model)
    weights, = model.glob("weights-*.npz")
    weights.rename(model / "weights.npz")  # the fixed names earlier versions wrote
    text = (model / "model.yaml").read_text().replace(weights.name, "weights.npz")
    (model / "model.yaml").write_text(text)
    graphconv.save_model(graph, model)
    assert not (model / "weights.npz").exists() and len(list(model.glob("weights-*.npz"))) == 1


@pytest.mark.parametrize("checkpoint", ["weights-written", "before-commit"])
def test_a_kill_before_the_commit_leaves_the_old_model(tmp_path, checkpoint):
    model = tmp_path / "m"
    assert graphconv_cli("compile", LENET, "-o", model).returncode == 0
    before = snapshot(model)
    killed = graphconv_cli("compile", LENET, "-o", model, "--output-stride", "2", env={FAULT_ENV: checkpoint})
    assert killed.returncode == -9
    assert graphconv.load(model).graph.meta["compiled"].get("output_stride") is None
    assert graphconv_cli("compile", LENET, "-o", model, "--output-stride", "2").returncode == 0
    assert not [p for p in model.iterdir() if p.name.startswith(TMP_PREFIX)], "temporaries cleaned up"
    assert graphconv.load(model).graph.meta["compiled"]["output_stride"] == 2
    assert set(snapshot(model)) == set(before), "no orphaned files"


def test_a_kill_after_the_commit_leaves_the_new_model_and_the_next_save_tidies_up(tmp_path):
    model = tmp_path / "m"
    graphconv.compile_model(LENET).save(model)
    killed = graphconv_cli("compile", LENET, "-o", model, "--passes", "shape-inference",
                           env={FAULT_ENV: "after-commit"})
    assert killed.returncode == -9
    assert graphconv.load(model).graph.find("fc"), "the new model (fc layers kept) is in place"
    assert len(list(model.glob("weights-*.npz"))) == 2, "the old weights were not removed yet"
    graphconv.compile_model(LENET).save(model)
    assert len(list(model.glob("weights-*.npz"))) == 1


def test_a_first_compile_killed_midway_leaves_no_model_and_the_next_one_works(tmp_path):
    model = tmp_path / "m"
    killed = graphconv_cli("compile", LENET, "-o", model, env={FAULT_ENV: "weights-written"})
    assert killed.returncode == -9
    assert not (model / "model.yaml").exists()
    assert graphconv_cli("compile", LENET, "-o", model).returncode == 0
    assert sorted(p.name for p in model.iterdir())[0] == "model.yaml" and len(list(model.iterdir())) == 2


def test_concurrent_compiles_to_one_folder_take_turns(tmp_path):
    model = tmp_path / "m"
    strides = [1, 2, 4, 1, 2, 4]
    with ThreadPoolExecutor(len(strides)) as pool:
        results = list(pool.map(lambda s: graphconv_cli("compile", LENET, "-o", model, "--output-stride", s),
                                strides))
    assert [r.returncode for r in results] == [0] * len(strides), [r.stderr for r in results]
    loaded = graphconv.load(model)
    assert loaded.output_stride[0] in (1, 2, 4)
    assert len(list(model.glob("weights-*.npz"))) == 1
    assert not [p for p in model.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_a_failed_compile_writes_nothing_and_keeps_the_old_model(tmp_path, write_spec):
    mismatched = write_spec("""
        name: mismatched
        input: {name: data, shape: [2, 12, 12]}
        layers:
          - {name: a, op: conv, out_channels: 2, kernel_size: 3, stride: 2, padding: 1}
          - {name: b, op: conv, out_channels: 2, kernel_size: 7, inputs: [data]}
          - {name: sum, op: add, inputs: [a, b]}
          - {name: fc, op: fc, out_features: 3}
    """)
    new = tmp_path / "new"
    result = graphconv_cli("compile", mismatched, "-o", new)
    assert result.returncode == 2 and "merges maps of different strides" in result.stderr
    assert not new.exists()
    model = tmp_path / "m"
    graphconv.compile_model(LENET).save(model)
    before = snapshot(model)
    assert graphconv_cli("compile", mismatched, "-o", model).returncode == 2
    assert snapshot(model) == before


def test_a_network_whose_passes_remove_every_layer_is_an_error(tmp_path, write_spec):
    spec = write_spec("""
        name: only_dropout
        input: {shape: [1, 4, 4]}
        layers:
          - {name: d1, op: dropout}
          - {name: d2, op: dropout}
    """)
    result = graphconv_cli("compile", spec, "-o", tmp_path / "m")
    assert result.returncode == 2 and "no layers left" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("output,message", [
    ("{tmp}/maps.npy", "is a folder"),
    ("/proc/graphconv-out.npy", "cannot write in /proc"),
    ("{tmp}/file.txt/out.npy", "is a file"),
])
def test_run_checks_its_outputs_before_running(tmp_path, output, message):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "maps.npy").mkdir()  # named as an output is, but a folder
    np.save(tmp_path / "in.npy", np.zeros((1, 1, 32, 32), np.float32))
    result = graphconv_cli("run", LENET, "--input", tmp_path / "in.npy", "--output", output.format(tmp=tmp_path))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "output shape" not in result.stdout, "nothing ran"


def test_atomic_write_leaves_nothing_when_the_write_fails(tmp_path):
    def failing(path):
        with open(path, "w") as f:
            f.write("partial")
        raise GraphconvError("the write failed")

    with pytest.raises(GraphconvError):
        atomic_write(tmp_path / "sub" / "out.npy", failing)
    assert list(tmp_path.iterdir()) == []
    atomic_write(tmp_path / "out.txt", lambda p: open(p, "w").write("done"))
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.usefixtures("fails_if_it_hangs")
def test_an_output_named_like_a_pipe_is_refused_before_anything_opens_it(tmp_path):
    """run --output pipe.npy waited for ever: the check of what the name held opened the
    FIFO to read an .npy header."""
    from graphconv.cluster import check_replaceable

    pipe = tmp_path / "map.npy"
    os.mkfifo(pipe)
    for check in (lambda: check_writable(pipe), lambda: check_replaceable(str(pipe), np.float32, (1, 2, 3, 3))):
        with pytest.raises(GraphconvError, match="map.npy: is there and is not a regular file"):
            check()


def test_check_writable_rejects_folders_and_accepts_new_paths(tmp_path):
    with pytest.raises(GraphconvError, match="is a folder"):
        check_writable(tmp_path)
    check_writable(tmp_path / "new" / "deeper" / "out.npy")
    assert list(tmp_path.iterdir()) == [], "checking creates nothing"


def test_output_folders_are_created_and_removed_again_when_the_write_fails(tmp_path):
    target = tmp_path / "a" / "b" / "model"
    with pytest.raises(RuntimeError):
        with output_folders(target):
            assert (tmp_path / "a" / "b").is_dir()
            raise RuntimeError("the write failed")
    assert not (tmp_path / "a").exists(), "a failed write leaves nothing behind"
    (tmp_path / "keep").mkdir()
    with pytest.raises(RuntimeError):
        with output_folders(tmp_path / "keep" / "new" / "model"):
            raise RuntimeError("the write failed")
    assert (tmp_path / "keep").is_dir() and not (tmp_path / "keep" / "new").exists(), "only what it made"


def test_save_model_creates_missing_folders(tmp_path):
    graphconv.save_model(graphconv.load_spec(LENET), tmp_path / "build" / "lenet")
    assert (tmp_path / "build" / "lenet" / "model.yaml").is_file()


def test_a_passes_module_in_the_working_folder_is_never_imported(tmp_path):
    (tmp_path / "passes").mkdir()
    (tmp_path / "passes" / "__init__.py").write_text("raise SystemExit('user code ran')\n")
    (tmp_path / "passes.py").write_text("raise SystemExit('user code ran')\n")
    result = graphconv_cli("passes", cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0 and "fc-to-conv" in result.stdout, result.stderr


@pytest.mark.parametrize("umask,file_mode,folder_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775),
                                                         (0o027, 0o640, 0o750)])
def test_files_and_folders_follow_the_users_umask(tmp_path, umask, file_mode, folder_mode):
    """What graphconv writes (model folders and their files, outputs and the folders made
    for them) gets the modes any other program would under the user's umask, not the
    0600/0700 of temporary files."""
    import stat
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 32, 32), np.float32))
    spec = SPECS / "lenet.yaml"
    for command in (["compile", spec, "-o", tmp_path / "new" / "m"],
                    ["run", tmp_path / "new" / "m", "--input", tmp_path / "x.npy", "--output", tmp_path / "o" / "s.npy"]):
        result = subprocess.run([sys.executable, "-m", "graphconv", *map(str, command)], capture_output=True,
                                text=True, preexec_fn=lambda: os.umask(umask), timeout=300)
        assert result.returncode == 0, result.stderr
    for path in (tmp_path / "new", tmp_path / "new" / "m", tmp_path / "o"):
        assert stat.S_IMODE(path.stat().st_mode) == folder_mode, path
    files = [tmp_path / "o" / "s.npy", *(tmp_path / "new" / "m").iterdir()]
    assert len(files) == 3  # model.yaml, weights-<hash>.npz, the output
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == file_mode, path


def test_a_users_copy_of_a_weights_file_stays_while_a_killed_save_s_orphans_go(tmp_path):
    """Only files graphconv made are deleted: a weights file a user copied in from another
    model is named like ours but no model.yaml here named it, so it stays through
    recompiles; the weights a killed save wrote, which its journal listed, go."""
    other, model = tmp_path / "other", tmp_path / "m"
    assert graphconv_cli("compile", SPECS / "tinydag.yaml", "-o", other).returncode == 0
    assert graphconv_cli("compile", SPECS / "digits.yaml", "-o", model).returncode == 0
    copied, = other.glob("weights-*.npz")
    (model / copied.name).write_bytes(copied.read_bytes())
    killed = graphconv_cli("compile", LENET, "-o", model, env={FAULT_ENV: "weights-written"})
    assert killed.returncode == -9 and len(list(model.glob("weights-*.npz"))) == 3, "one orphan left by the kill"
    assert graphconv_cli("compile", SPECS / "digits.yaml", "-o", model, "--output-stride", "2").returncode == 0
    assert (model / copied.name).read_bytes() == copied.read_bytes()
    spec = (model / "model.yaml").read_text()
    used = [p.name for p in model.glob("weights-*.npz") if p.name in spec]
    assert len(used) == 1 and sorted(p.name for p in model.glob("weights-*.npz")) == sorted([copied.name, *used])
    assert not [p for p in model.iterdir() if p.name.startswith(TMP_PREFIX)], "the journal swept too"


def test_another_machine_s_temporaries_are_not_swept_as_a_dead_run_s(tmp_path):
    """On a folder shared by a cluster's nodes, another node's live run has a pid that is
    not running here: its map in progress (and an output it set aside) must stay, where
    this machine's dead run's temporaries go."""
    from graphconv import files

    dead = 2 ** 22 + 12345  # above Linux's pid_max default: no process has it
    ours = tmp_path / f"{files.TMP_PREFIX}{dead}@{files._machine()}-abcd-map.npy"
    theirs = tmp_path / f"{files.TMP_PREFIX}{dead}@0badcafe-abcd-map.npy"
    their_aside = tmp_path / f"{files.ASIDE_PREFIX}{dead}@0badcafe-abcd-old.zarr"
    for path in (ours, theirs):
        path.write_bytes(b"partial")
    their_aside.mkdir()
    files.atomic_write(tmp_path / "out.txt", lambda p: open(p, "w").write("x"))
    assert not ours.exists() and theirs.exists() and their_aside.exists()
    assert sorted(p.name.split("-")[2].split("@")[1] for p in tmp_path.glob(f"{files.TMP_PREFIX}*")) == ["0badcafe"]


def test_a_signal_landing_in_the_write_probe_leaves_no_probe_file(tmp_path, monkeypatch):
    """CI: a SIGTERM right after the probe's mkstemp left `.graphconv-tmp-...-probe-...`
    in the output folder. The probe holds signals back until it is removed, then
    delivers them."""
    import signal
    import tempfile

    from graphconv import files

    real_mkstemp = tempfile.mkstemp

    def mkstemp_then_ctrl_c(*args, **kwargs):
        made = real_mkstemp(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)  # Ctrl-C just as the probe exists
        return made

    monkeypatch.setattr(files.tempfile, "mkstemp", mkstemp_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        check_writable(tmp_path / "o.npy")
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_signals_deferred_delivers_after_the_block_to_the_handler_that_was_there(tmp_path):
    import signal

    from graphconv.files import signals_deferred

    got = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    try:
        with signals_deferred():
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
            assert got == []
        assert got == [signal.SIGTERM]
        with pytest.raises(KeyboardInterrupt):
            with signals_deferred():
                with signals_deferred():  # nested: passed outwards, raised once outside both
                    signal.raise_signal(signal.SIGINT)
                got.append("inner done")
        assert got == [signal.SIGTERM, "inner done"]
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("limit", [0, 4000])
def test_compile_past_the_file_size_limit_names_the_model_and_leaves_nothing(tmp_path, limit):
    """`ulimit -f` (or a full disk): 'graphconv: File too large' named nothing; and with
    no room for the first byte, the save's journal was left, 0 bytes, after exit 2."""
    import resource

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    (tmp_path / "models").mkdir()
    result = subprocess.run([sys.executable, "-m", "graphconv", "compile", str(LENET), "-o", "models/m"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300, preexec_fn=limited)
    assert result.returncode == 2 and result.stderr == "graphconv: models/m: cannot write: File too large\n"
    assert list((tmp_path / "models").iterdir()) == []


def test_signals_deferred_delivers_every_signal_held_back_each_once():
    """A Ctrl-C and a SIGTERM in one block: the first delivered raised KeyboardInterrupt
    and the SIGTERM was never delivered. Each handler now runs once (a signal sent twice
    is delivered once), and the first exception is raised after all have run."""
    import signal

    from graphconv.files import signals_deferred

    got = []

    def ctrl_c(signum, frame):
        got.append(signum)
        raise KeyboardInterrupt

    def term(signum, frame):
        got.append(signum)
        raise RuntimeError("terminated")

    previous = {signum: signal.signal(signum, handler)
                for signum, handler in ((signal.SIGINT, ctrl_c), (signal.SIGTERM, term))}
    try:
        with pytest.raises(KeyboardInterrupt) as raised:
            with signals_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGINT)
                assert got == []
        assert got == [signal.SIGINT, signal.SIGTERM]
        assert raised.type is KeyboardInterrupt
        assert signal.getsignal(signal.SIGINT) is ctrl_c and signal.getsignal(signal.SIGTERM) is term
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_a_sigterm_held_back_behind_a_ctrl_c_still_ends_the_process():
    """Library use, SIGTERM at its default: a Ctrl-C then a SIGTERM in one block left the
    process alive after a KeyboardInterrupt; the SIGTERM now ends it."""
    code = ("import os, signal\nfrom graphconv.files import signals_deferred\n"
            "try:\n    with signals_deferred():\n        os.kill(os.getpid(), signal.SIGINT)\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\nexcept KeyboardInterrupt:\n    print('alive')\n"
            "print('still alive')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == -15 and done.stdout == "", (done.returncode, done.stdout, done.stderr)


def test_a_handler_installed_outside_python_is_left_alone(monkeypatch):
    """A handler C code installed (signal.getsignal: None) cannot be put back: the block
    left its own handler there for good, swallowing every later Ctrl-C. Such a signal is
    now not held back at all; the others still are."""
    import signal

    from graphconv.files import signals_deferred

    real_getsignal = signal.getsignal
    monkeypatch.setattr(signal, "getsignal", lambda signum: None if signum == signal.SIGINT else real_getsignal(signum))
    got = []
    previous_term = signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    try:
        with signals_deferred():
            assert real_getsignal(signal.SIGINT) is signal.default_int_handler, "not replaced"
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)  # not held back
            os.kill(os.getpid(), signal.SIGTERM)
            assert got == []
        assert got == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    assert real_getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_atomic_write_removes_its_temporary_whatever_stops_it(tmp_path, monkeypatch, failure):
    """A full disk is one error naming the output, a Ctrl-C passes as it is; either way
    the temporary is gone, and before the error's message is made (it reports the free
    space, which the temporary took)."""
    from graphconv import files

    seen = []

    def failing(path):
        with open(path, "w") as f:
            f.write("partial")
        raise failure

    real_why = files._why_not_written

    def why(err, folder, size):
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        return real_why(err, folder, size)

    monkeypatch.setattr(files, "_why_not_written", why)
    with pytest.raises(GraphconvError if isinstance(failure, OSError) else KeyboardInterrupt) as raised:
        atomic_write(tmp_path / "out.npy", failing, size=100)
    assert list(tmp_path.iterdir()) == []
    if isinstance(failure, OSError):
        assert str(raised.value).endswith("out.npy: cannot write: No space left on device; it needs 100 B")
        assert seen == [[]], "the temporary was removed before the message was made"


def _write_text(text):
    def write(path):
        with open(path, "w") as f:
            f.write(text)
    return write


@pytest.mark.parametrize("links", [True, False], ids=["hard-links", "no-hard-links"])
@pytest.mark.parametrize("failing_call", [2, 3])
def test_atomic_write_all_puts_back_what_a_failed_rename_left_new(tmp_path, monkeypatch, failing_call, links):
    """A rename failing partway (the second or third of three) left the files renamed
    before it new beside the old rest, under a promise of all old or all new. They are
    put back (from hard links, or where the file system has none from the old files
    renamed aside), a new file where there was none removed, nothing else left."""
    import errno

    from graphconv import files
    from graphconv.files import atomic_write_all

    (tmp_path / "net.yaml").write_text("old spec")
    (tmp_path / "net.npz").write_text("old weights")
    real_replace, calls = os.replace, []

    def replace_failing_once(src, dst, *args, **kwargs):
        calls.append(dst)
        if len(calls) == failing_call:
            raise OSError(errno.EACCES, "Permission denied", str(dst))
        return real_replace(src, dst, *args, **kwargs)

    def no_links(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(files.os, "replace", replace_failing_once)
    if not links:
        monkeypatch.setattr(files.os, "link", no_links)
    all_three = [(tmp_path / "net.yaml", _write_text("new spec"), ""),
                 (tmp_path / "net.npz", _write_text("new weights"), ".npz"),
                 (tmp_path / "net.labels.txt", _write_text("new labels"), "")]
    with pytest.raises(GraphconvError) as raised:
        atomic_write_all(all_three)
    failed = ["net.labels.txt", "net.npz", "net.yaml"][failing_call - 1]
    assert str(raised.value).endswith(f"{failed}: cannot write: Permission denied"), str(raised.value)
    assert snapshot(tmp_path) == {"net.yaml": b"old spec", "net.npz": b"old weights"}
    monkeypatch.undo()
    atomic_write_all(all_three)
    assert snapshot(tmp_path) == {"net.yaml": b"new spec", "net.npz": b"new weights",
                                  "net.labels.txt": b"new labels"}, "all new, no second names left"


def test_atomic_write_all_says_why_a_write_failed_as_atomic_write_does(tmp_path):
    """numpy's short write names no reason ('1274196 requested and 25568 written'):
    atomic_write worked the reason out again (`_why_not_written`), atomic_write_all
    printed numpy's words."""
    from graphconv.files import atomic_write_all

    (tmp_path / "net.yaml").write_text("old spec")

    def short_write(path):
        open(path, "w").close()
        raise OSError("1274196 requested and 25568 written")

    with pytest.raises(GraphconvError, match=r"net\.npz: cannot write: No space left on device \(.* free\)$"):
        atomic_write_all([(tmp_path / "net.yaml", _write_text("new spec"), ""),
                          (tmp_path / "net.npz", short_write, ".npz")])
    assert snapshot(tmp_path) == {"net.yaml": b"old spec"}


def _interrupting_rmtree(monkeypatch, files, signum, got):
    """shutil.rmtree that removes one file, receives `signum` (as a job scheduler's
    SIGTERM would come), and only then goes on: what runs after the signal is recorded."""
    real_rmtree = files.shutil.rmtree

    def rmtree(path, *args, **kwargs):
        next(p for p in sorted(path.rglob("*")) if p.is_file()).unlink()
        os.kill(os.getpid(), signum)
        got.append("went on after the signal")
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(files.shutil, "rmtree", rmtree)


def _a_map_folder(path, value):
    (path / "0").mkdir(parents=True)
    for i in range(3):
        (path / "0" / f"c{i}").write_text(value)
    (path / "zarr.json").write_text(value)
    return path


@pytest.mark.parametrize("name", ["map.zarr.partial", ".graphconv-old-1@0badcafe-abcd-map.zarr",
                                  ".graphconv-tmp-{owner}-abcd-map.zarr"])
def test_a_signal_cuts_a_folder_s_removal_short_and_leaves_only_a_temporary_the_next_run_removes(
        tmp_path, monkeypatch, name):
    """remove_temporary held Ctrl-C and SIGTERM back for a whole rmtree (a set-aside map
    of many GB): a job scheduler's SIGTERM waited until its SIGKILL. The folder's name
    goes first (one rename, signals held; none for a temporary's); its removal is cut
    short by the signal, and what is left is a temporary of this process, never half a
    folder under a name that says more: a half-removed `.graphconv-old-` folder would be
    renamed back as the output, a partial map without its job refused."""
    import signal

    from graphconv import files

    got = []
    _interrupting_rmtree(monkeypatch, files, signal.SIGINT, got)
    folder = _a_map_folder(tmp_path / name.format(owner=files._owner()), "old")
    with pytest.raises(KeyboardInterrupt):
        files.remove_temporary(folder)
    assert got == [], "the signal was not held back"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(f"{TMP_PREFIX}{files._owner()}-"), left
    assert not folder.exists() or folder.name.startswith(TMP_PREFIX)
    monkeypatch.undo()
    monkeypatch.setattr(files, "_process_alive", lambda pid: False)  # this process gone, as after its exit
    files._remove_stale_temporaries(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_signal_as_the_old_map_is_removed_leaves_the_new_map_whole(tmp_path, monkeypatch):
    """move_into_place: the renames (old map aside, new one in) hold signals back; the
    old map's removal after them does not. A SIGTERM in it stops the process at once,
    the new map complete under the output's name and committed, no `.graphconv-old-`
    folder (which a later run could rename back), the rest of the old map a temporary
    the next run removes."""
    import signal

    from graphconv import files

    class Terminated(BaseException):
        pass

    def terminate(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        got = []
        _interrupting_rmtree(monkeypatch, files, signal.SIGTERM, got)
        target = _a_map_folder(tmp_path / "map.zarr", "old")
        new = _a_map_folder(files.temporary_beside(target), "new")
        files.forget_committed()
        with pytest.raises(Terminated):
            files.move_into_place(new, target)
        assert got == []
        assert signal.getsignal(signal.SIGTERM) is terminate
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert files.committed_outputs() == [str(target)]
    assert {p.relative_to(target).as_posix(): p.read_text() for p in target.rglob("*") if p.is_file()} == {
        "0/c0": "new", "0/c1": "new", "0/c2": "new", "zarr.json": "new"}
    assert not list(tmp_path.glob(f"{files.ASIDE_PREFIX}*"))
    monkeypatch.undo()
    monkeypatch.setattr(files, "_process_alive", lambda pid: False)
    files._remove_stale_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["map.zarr"]


def test_the_free_space_a_map_is_checked_against_is_what_this_process_may_use_even_as_root(tmp_path, monkeypatch):
    """The blocks a file system keeps back are counted free by statvfs' f_bfree; root may
    use them only as the file system's reserved user or with CAP_SYS_RESOURCE (a
    container's root often has neither), so they were counted for any root process and a
    map passed the check on a disk that could not hold it. What f_bavail (shutil's free)
    says is what is checked, for root as for anyone."""
    import collections
    import shutil

    from graphconv import files

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(10 ** 12, 9 * 10 ** 11, 51 * 10 ** 9))
    monkeypatch.setattr(os, "geteuid", lambda: 0, raising=False)
    assert files._free_bytes(tmp_path) == 51 * 10 ** 9


def test_a_model_s_digest_is_of_its_files_contents_wherever_they_are_and_however_named(tmp_path, monkeypatch):
    """Maps record `model_digest` to tell a model compiled again or retrained in place
    (`--skip-existing`); a folder named by a relative path, or copied elsewhere, is the same model."""
    from graphconv.files import model_digest

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.yaml").write_text("a: 1\n")
    (folder / "weights-0.npz").write_bytes(b"weights")
    inside = [folder, folder / "weights-0.npz"]  # as graph.meta["read_from"] lists a compiled folder's
    digest = model_digest(inside)
    monkeypatch.chdir(tmp_path)
    assert model_digest(["model", folder / "weights-0.npz"]) == digest
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("model.yaml", "weights-0.npz"):
        (copy / name).write_bytes((folder / name).read_bytes())
    assert model_digest([copy, copy / "weights-0.npz"]) == digest
    (folder / "model.yaml").write_text("a: 2\n")
    assert model_digest(inside) != digest
    spec = tmp_path / "net.yaml"
    spec.write_text("layers: []\n")
    (tmp_path / "w.npz").write_bytes(b"1")
    before = model_digest([spec, tmp_path / "w.npz"])
    (tmp_path / "w.npz").write_bytes(b"2")  # retrained in place: a spec's weights file counts by its contents
    assert model_digest([spec, tmp_path / "w.npz"]) != before


@pytest.mark.parametrize("suffix", [".npy", ".tif"])
def test_a_name_the_file_system_takes_is_written_however_long(tmp_path, suffix):
    """70 CJK characters are 210 bytes, a legal name; its temporary, prefixed, was not,
    and a whole map was computed, then refused "File name too long"."""
    from graphconv.files import atomic_write, check_name_fits, name_max

    target = tmp_path / ("样" * 70 + suffix)
    atomic_write(str(target), lambda path: np.save(path, np.zeros(3, np.float32)), suffix=".npy")
    assert target.exists() and [p.name for p in tmp_path.iterdir()] == [target.name]
    check_name_fits(str(target), "--output")
    too_long = tmp_path / ("样" * (name_max(tmp_path) // 3 + 1) + suffix)
    with pytest.raises(GraphconvError, match="--output's name is .* bytes, longer than the 255 its file system takes"):
        check_name_fits(str(too_long), "--output")


def test_a_scratch_folder_sweeps_those_of_runs_that_are_gone(tmp_path, monkeypatch):
    """A --workers run's local Dask cluster spills tiles into its scratch folder in /tmp,
    which it removes when it ends; a run killed with -9 left it there (GBs of spilled
    tiles) for good. The next scratch folder asked for removes those whose process is
    gone and keeps live ones."""
    import tempfile

    from graphconv import files

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    dead = tmp_path / f"{TMP_PREFIX}{gone}@{files._machine()}-dask-1a2b"
    (dead / "worker-x").mkdir(parents=True)
    (dead / "worker-x" / "spilled.bin").write_bytes(b"tile")
    live = tmp_path / f"{TMP_PREFIX}{os.getpid()}@{files._machine()}-dask-3c4d"
    live.mkdir()
    elsewhere = tmp_path / f"{TMP_PREFIX}{gone}@0123abcd-dask-5e6f"  # another machine's, on a shared /tmp
    elsewhere.mkdir()
    users = tmp_path / "dask-scratch-space"
    users.mkdir()

    made = files.scratch_folder("dask")
    assert made.parent == tmp_path and made.is_dir()
    assert made.name.startswith(f"{TMP_PREFIX}{os.getpid()}@{files._machine()}-dask-")
    assert not dead.exists() and live.is_dir() and elsewhere.is_dir() and users.is_dir()
