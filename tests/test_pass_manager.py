"""The pass API: registry, pipelines, requirements, the verifier, IR printing, plugins."""
import io
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import graphconv
from graphconv import pass_manager as pm
from graphconv.errors import GraphconvError, PassError
from graphconv.pass_manager import PassManager, parse_pipeline, register_pass
from graphconv.frontends import load_network as load_spec
from conftest import ROOT, SPECS


@pytest.fixture
def lenet():
    return load_spec(SPECS / "lenet.yaml")


def test_builtins_are_registered_with_their_origin():
    names = {p.name: p for p in pm.registered_passes()}
    for name in ("shape-inference", "fc-to-conv", "remove-dropout", "dead-node-elimination",
                 "fuse-conv-activation", "output-stride", "conv-to-fc", "receptive-field"):
        assert name in names and names[name].description
    assert names["fc-to-conv"].origin == "built-in (passes/fc_to_conv.py)"
    assert names["output-stride"].options == {"stride": None, "method": "auto"}


def test_every_module_of_the_passes_folder_registers_its_passes():
    """Adding a pass is adding its file to passes/: nothing else lists it."""
    origins = {p.origin for p in pm.registered_passes()}
    modules = sorted(f.name for f in (ROOT / "passes").glob("*.py") if f.name != "__init__.py")
    assert len(modules) > 10
    for module in modules:
        assert f"built-in (passes/{module})" in origins, module


def test_threads_running_their_first_models_at_once_all_see_the_built_in_passes():
    """A fresh process whose threads (a Dask worker's) each ran a model first: one marked
    the registry loaded before its import ended, and another found it empty: "unknown
    pass 'channels-last' (registered: )", in 2 runs of 3."""
    import subprocess
    import sys

    code = textwrap.dedent(f"""
        import threading, numpy as np, graphconv
        errors = []
        def first_run():
            try:
                graphconv.load({str(SPECS / "lenet.yaml")!r}).run(np.zeros((1, 1, 32, 32), np.float32))
            except Exception as err:
                errors.append(repr(err))
        threads = [threading.Thread(target=first_run) for _ in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print(errors)
    """)
    for _ in range(3):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_parse_pipeline():
    assert parse_pipeline("a, b{k=1,m=x, f=0.5, t=true},c") == [
        ("a", {}), ("b", {"k": 1, "m": "x", "f": 0.5, "t": True}), ("c", {})]
    assert parse_pipeline("p{prefix= >> , m=[ 1 , x ]}") == [("p", {"prefix": ">>", "m": [1, "x"]})]  # as documented
    for bad in ("a,,b", "a{k}", "a{k=1", ""):
        with pytest.raises(PassError):
            parse_pipeline(bad)
    with pytest.raises(PassError, match="pass option 'alpha' of 'a' is given twice"):  # the last was kept
        parse_pipeline("a{alpha=0.1,alpha=0.2}")


def test_unknown_pass_and_option_are_clear():
    with pytest.raises(PassError, match="unknown pass 'fc-to-cnv': did you mean 'fc-to-conv'\\? \\(registered: "):
        PassManager("fc-to-cnv")
    with pytest.raises(PassError, match=r"pass 'output-stride' has no option 'strid' \(it takes: stride=\(required\), method=auto\)"):
        PassManager("output-stride{strid=2}")
    with pytest.raises(PassError, match="needs option"):
        PassManager("output-stride")


def test_requirements_run_the_provider_first(lenet):
    manager = PassManager(["fc-to-conv"])
    out = manager.run(lenet)
    assert [(r.name, r.automatic) for r in manager.records] == [("shape-inference", True), ("fc-to-conv", False)]
    assert not out.find("fc") and lenet.find("fc"), "the manager works on a copy"


def test_requirements_can_be_strict(lenet):
    with pytest.raises(PassError, match="pass 'fc-to-conv' requires 'shapes'; run 'shape-inference' before it"):
        PassManager(["fc-to-conv"], auto_requirements=False).run(lenet)


def test_changes_invalidate_analyses_not_preserved(lenet):
    calls = []

    @register_pass("needs-shapes", "test", requires=("shapes",))
    def needs_shapes(graph):
        calls.append(graph.output.shape)
        return False

    @register_pass("breaks-shapes", "test")
    def breaks_shapes(graph):
        graph.set_params("conv1", out_channels=6)
        return True

    manager = PassManager(["needs-shapes", "breaks-shapes", "needs-shapes"])
    manager.run(lenet)
    assert [r.name for r in manager.records] == [
        "shape-inference", "needs-shapes", "breaks-shapes", "shape-inference", "needs-shapes"]


def test_verifier_names_the_pass_that_broke_the_ir(lenet):
    @register_pass("bad-pass", "breaks the weights on purpose")
    def bad_pass(graph):
        graph.set_weights("fc4", weight=np.zeros((84, 7), np.float32))
        return True

    with pytest.raises(PassError, match=r"pass 'bad-pass' \(.*?\) broke the IR: \S*specs/lenet.yaml:\d+: layer 'fc4': "
                                         r"fc expects weight of shape \[84, 120\]"):
        PassManager(["bad-pass"]).run(lenet)


def test_without_verifying_each_pass_the_result_is_still_verified(lenet):
    """--no-verify (verify_each=False) wrote a model whose run then failed, or crashed
    with networkx's traceback on a cycle: it skips the checks between passes only."""
    @register_pass("bad-pass", "breaks the weights on purpose")
    def bad_pass(graph):
        graph.set_weights("fc4", weight=np.zeros((84, 7), np.float32))
        return True

    @register_pass("cycle-pass", "makes a cycle on purpose")
    def cycle_pass(graph):
        graph.set_inputs("conv1", ["relu1"])
        return True

    with pytest.raises(PassError, match=r"the passes left the IR invalid \(drop --no-verify, or from Python "
                                         r"verify_each=True, to find which pass\): .*layer 'fc4': fc expects"):
        PassManager(["bad-pass"], verify_each=False).run(lenet)
    with pytest.raises(PassError, match=r"the passes left the IR invalid .*cycle"):
        PassManager(["cycle-pass"], verify_each=False).run(lenet)
    with pytest.raises(PassError, match=r"pass 'shape-inference' crashed on an invalid IR .*cycle"):
        PassManager(["cycle-pass", "shape-inference"], verify_each=False).run(lenet)
    # it blamed shape-inference alone
    with pytest.raises(PassError, match=r"layer 'fc4': fc expects .* \(in pass 'shape-inference'; an earlier pass, "
                                        r"unchecked, may have made this: drop --no-verify"):
        PassManager(["bad-pass", "shape-inference"], verify_each=False).run(lenet)

    @register_pass("unstrided-pool", "changes every cell on purpose")
    def unstrided_pool(graph):
        graph.set_params("pool2", stride=1)
        return True

    with pytest.raises(PassError, match=r"the passes left the IR invalid .*the first output cell read"):
        PassManager(["shape-inference", "fc-to-conv", "unstrided-pool"], verify_each=False).run(lenet)


def test_verifier_catches_stale_shape_annotations(lenet):
    @register_pass("lies-about-shapes", "claims to preserve shapes but does not", preserves=("shapes",))
    def lies(graph):
        graph.set_shape("relu1", (6, 27, 27))
        return True

    with pytest.raises(PassError, match=r"pass 'lies-about-shapes' \(.*?\) broke the IR: .*layer 'relu1': "
                                        r"annotated shape \(6, 27, 27\) but its inputs give \(6, 28, 28\)"):
        PassManager(["shape-inference", "lies-about-shapes"]).run(lenet)


def test_a_plugin_pass_cannot_make_a_weight_writeable_again():
    """Weights are read-only and shared with the graph the pipeline was given; a pass that
    made one writeable (setflags(write=True)) and doubled it changed the caller's graph
    for good, and verify's reference classifier with it. The view cannot be made
    writeable now: the pass is stopped before it writes, and the graph keeps its numbers."""
    model = graphconv.load(SPECS / "lenet.yaml")
    crop = np.random.default_rng(0).random((1, *model.crop_shape), dtype=np.float32)
    before = model.run(crop)

    @register_pass("unlocks-weights", "makes a weight array writeable")
    def unlocks(graph):
        weight = graph.node("conv1").weights["weight"]
        weight.setflags(write=True)
        weight *= 2
        return True

    with pytest.raises(PassError, match=r"pass 'unlocks-weights' .* crashed at \S+:\d+ in unlocks: ValueError: cannot "
                                        r"set WRITEABLE flag .*read-only, and stay so: .*graph.set_weights"):
        PassManager(["unlocks-weights"]).run(model.graph)
    np.testing.assert_array_equal(model.run(crop), before)
    np.testing.assert_allclose(graphconv.compile_model(model.graph).run(crop).reshape(before.shape), before, rtol=1e-5)


def test_a_plugin_pass_writing_through_the_memory_behind_a_weight_is_named_and_its_model_then_runs_what_its_graph_holds():
    """A pass that reaches past the read-only view (its memoryview's exporter) can still
    write: it is named, the caller is told to load the graph again, and the loaded model
    runs what its graph now holds, not weights it packed before (a compile of it or a
    pickle read the written ones: one model, two answers)."""
    model = graphconv.load(SPECS / "lenet.yaml")
    crop = np.random.default_rng(0).random((1, *model.crop_shape), dtype=np.float32)
    before = model.run(crop)

    @register_pass("doubles-in-place", "writes into the memory behind a weight array")
    def doubles(graph):
        memory = graph.node("conv1").weights["weight"].base.obj
        memory *= 2
        return True

    with pytest.raises(PassError, match=r"pass 'doubles-in-place' \(.*\) wrote into layer 'conv1's weight in place, "
                                        r".*now holds the written numbers \(load it again\).*"
                                        r"graph.set_weights\('conv1', weight=...\)"):
        PassManager(["doubles-in-place"]).run(model.graph)
    after = model.run(crop)
    assert not np.allclose(after, before)
    np.testing.assert_array_equal(after, pickle.loads(pickle.dumps(model)).run(crop))


def test_annotations_of_an_analysis_a_pass_made_stale_are_forgotten(lenet):
    """A pass reading receptive fields without requiring them read the stride before
    output-stride dilated the network, (4, 4) for (2, 2): shapes were forgotten when
    stale, other analyses' annotations not."""
    seen = {}

    @register_pass("reads-fields", "reads receptive fields it does not require")
    def reads_fields(graph):
        seen["field"] = graph.node(graph.output.name).annotations.get("receptive_field")
        return False

    PassManager(["receptive-field", "reads-fields"]).run(lenet)
    assert seen["field"] is not None
    PassManager(["fc-to-conv", "receptive-field", "output-stride{stride=2,method=dilate}", "reads-fields"]).run(lenet)
    assert seen["field"] is None
    PassManager(["fc-to-conv", "output-stride{stride=2,method=dilate}", "receptive-field", "reads-fields"]).run(lenet)
    assert tuple(seen["field"].stride) == (2, 2)


def test_slips_a_plugin_pass_makes_are_named_as_its_own(lenet):
    """An edit through graph.nx then `return False`: the next built-in pass was blamed for
    the broken IR. A layer left reading into nothing: the spec writer's error named no
    pass, and Python ran the orphan. A pass the check refuses: --print-ir-after printed
    nothing, where the IR was wanted most."""
    @register_pass("edits-nx-quietly", "edits graph.nx and says it did not")
    def edits_nx_quietly(graph):
        graph.nx.nodes["pool2"]["params"]["stride"] = (1, 1)
        return False

    @register_pass("leaves-an-orphan", "adds a layer nothing reads")
    def leaves_an_orphan(graph):
        graph.add("orphan", "relu", ["conv1"])
        return True

    @register_pass("breaks-fc4", "breaks the weights on purpose")
    def breaks_fc4(graph):
        graph.set_weights("fc4", weight=np.zeros((84, 7), np.float32))
        return True

    with pytest.raises(PassError, match=r"pass 'edits-nx-quietly' \(.*\) changed the graph but returned False"):
        PassManager(["edits-nx-quietly"]).run(lenet)
    with pytest.raises(PassError, match=r"pass 'leaves-an-orphan' \(.*\) left layer 'orphan' that reaches no "
                                        r"output: erase them"):
        PassManager(["leaves-an-orphan"]).run(lenet)
    cleaned = PassManager(["leaves-an-orphan", "dead-node-elimination"]).run(lenet)
    assert "orphan" not in cleaned.nx
    dump = io.StringIO()
    with pytest.raises(PassError, match=r"pass 'breaks-fc4' \(module test_pass_manager\) broke the IR"):
        PassManager(["breaks-fc4"], print_ir_after={"breaks-fc4"}, out=dump).run(lenet)
    assert "// ----- IR after breaks-fc4 -----" in dump.getvalue()


def test_user_pass_crash_is_reported_with_its_name(lenet):
    @register_pass("crashes", "divides by zero")
    def crashes(graph):
        return 1 / 0

    line = crashes.__code__.co_firstlineno + 2  # its body (the first line is the decorator's): where to look
    with pytest.raises(PassError, match=rf"pass 'crashes' \(module test_pass_manager\) crashed at \S*"
                                        rf"test_pass_manager.py:{line} in crashes: ZeroDivisionError: division "
                                        r"by zero$"):
        PassManager(["crashes"]).run(lenet)  # the cause is chained: no CLI option to name



def test_a_pass_that_calls_sys_exit_is_refused_naming_where(lenet):
    """A pass's sys.exit(0) ended `graphconv compile` with exit 0, nothing written and
    nothing said."""
    import sys

    @register_pass("leaves", "exits instead of raising")
    def leaves(graph):
        sys.exit(0)

    line = leaves.__code__.co_firstlineno + 2
    with pytest.raises(PassError, match=rf"pass 'leaves' \(module test_pass_manager\) called sys.exit\(0\) at \S*"
                                        rf"test_pass_manager.py:{line} in leaves: a pass edits the graph and returns"):
        PassManager(["leaves"]).run(lenet)


@pytest.mark.parametrize("name, declared", [("shape-report", dict(analysis=True)),
                                           ("shape-keeper", dict(preserves=("shapes",)))])
def test_a_shape_a_plugin_pass_sets_wrong_is_refused_by_the_pass_name(lenet, name, declared):
    """set_shape changes no version: a wrong shape from a pass that changed nothing else
    passed unchecked, and fc-to-conv after it crashed in a reshape with a traceback."""
    @register_pass(name, "sets a shape", requires=("shapes",), **declared)
    def wrong_shape(graph):
        c, h, w = graph.node("pool2").shape
        graph.set_shape("pool2", (c, h - 1, w - 1))
        return False

    with pytest.raises(PassError, match=rf"pass '{name}' \(module test_pass_manager\) broke the IR: .*layer "
                                        r"'pool2': annotated shape \(16, 4, 4\) but its inputs give \(16, 5, 5\)"):
        PassManager([name, "fc-to-conv"]).run(lenet)


def test_an_analysis_pass_that_edits_the_graph_is_refused(lenet):
    @register_pass("sneaky-report", "a report that edits", analysis=True)
    def sneaky_report(graph):
        graph.set_params("pool1", stride=1)

    @register_pass("honest-report", "a report", analysis=True)
    def honest_report(graph):
        graph.annotate("conv1", "seen", True)

    with pytest.raises(PassError, match=r"pass 'sneaky-report' \(module test_pass_manager\) is registered as an "
                                        r"analysis \(analysis=True: it only reads the graph\) but changed it"):
        pm.run_passes(lenet, "sneaky-report")
    manager = PassManager(["honest-report"])
    manager.run(lenet)
    assert [r.modified for r in manager.records] == [False]  # None, from an analysis, changed nothing


def test_duplicate_registration_is_refused():
    with pytest.raises(PassError, match="pass 'fc-to-conv' is already registered by built-in"):
        register_pass("fc-to-conv", "again")(lambda graph: False)


def test_a_pass_defined_by_exec_registers_and_runs(lenet):
    """A function exec() made with globals of its own has no __module__: register_pass
    crashed on it (AttributeError inside graphconv); running the cell again replaces it."""
    source = ("@register_pass('exec-made', 'made by exec')\n"
              "def exec_made(graph):\n"
              "    return False\n")
    for _ in range(2):
        exec(compile(source, "<notebook cell>", "exec"), {"register_pass": register_pass})
    assert pm.get_pass("exec-made").origin == "code <notebook cell>"
    PassManager(["exec-made"]).run(lenet)


def test_a_built_in_name_is_refused_at_registration_in_a_fresh_process(tmp_path):
    """The built-ins load on first use of the registry: registered before that from a
    notebook, the clash was refused only later, by every compile of the process."""
    code = ("import graphconv\n"
            "try:\n"
            "    graphconv.register_pass('fold-pad', 'mine')(lambda graph: False)\n"
            "except graphconv.GraphconvError as err:\n"
            "    print('refused:', err)\n"
            "graphconv.compile_model(graphconv.load_spec(%r))\n"
            "print('compiled')\n" % str(SPECS / "lenet.yaml"))
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "refused: pass 'fold-pad' is already registered by built-in (passes/fold_pad.py)" in result.stdout
    assert result.stdout.endswith("compiled\n")


def test_print_ir_before_and_after(lenet):
    out = io.StringIO()
    PassManager(["remove-dropout", "fc-to-conv"], print_ir_before={"fc-to-conv"},
                print_ir_after={"all"}, out=out).run(lenet)
    text = out.getvalue()
    assert "// ----- IR before fc-to-conv -----" in text
    assert "// ----- IR after remove-dropout -----" in text
    assert "// ----- IR after fc-to-conv -----" in text and "%fc3 = conv(%pool2)" in text


def test_a_text_option_is_kept_as_written():
    """It was read as a number and written back: prefix=007 gave '7', 1_1 '11', 1e3
    '1000.0', TRUE 'true' (a layer=1_1 option named the wrong layer)."""
    @register_pass("takes-text", "test")
    def takes_text(graph, prefix: str = "ops:", count: int = 1):
        return False

    for text in ("007", "1_1", "1e3", "1.50", "TRUE"):
        ((name, options),) = parse_pipeline(f"takes-text{{prefix={text},count=2}}")
        assert options == {"prefix": text, "count": 2}
    with pytest.raises(PassError, match="option 'count'"):
        PassManager(["takes-text{count=abc}"])
    # Given from Python, text a pipeline cannot write back (the compiled model records it) is refused.
    for unwritable in ("a,b}", "[x", " x "):
        with pytest.raises(PassError, match=r"option 'prefix' of 'takes-text' is .*: a pipeline's text cannot hold"):
            PassManager([("takes-text", {"prefix": unwritable})])


def test_print_ir_after_a_pass_by_its_old_name_prints_it(lenet):
    """fuse-conv-relu, which --passes still takes for fuse-conv-activation, printed nothing."""
    out = io.StringIO()
    PassManager(["fuse-conv-relu"], print_ir_after="fuse-conv-relu", out=out).run(lenet)
    assert "// ----- IR after fuse-conv-activation -----" in out.getvalue()


def test_print_ir_takes_one_pass_name_as_a_string(lenet):
    out = io.StringIO()
    PassManager(["remove-dropout", "fc-to-conv"], print_ir_before="fc-to-conv", print_ir_after="all",
                out=out).run(lenet)
    text = out.getvalue()
    assert "IR after remove-dropout" in text and "IR after fc-to-conv" in text  # every pass, shape-inference too
    assert text.count("// ----- IR before") == 1 and "IR before fc-to-conv" in text
    with pytest.raises(PassError, match="print_ir_after: pass names .* got 3"):
        PassManager(["fc-to-conv"], print_ir_after=3)
    with pytest.raises(PassError, match="pass 'fold-pad' is not in the pipeline"):
        PassManager(["fc-to-conv"], print_ir_after="fold-pad")


def test_run_passes_takes_a_model_and_returns_one(lenet):
    model = graphconv.Model(lenet)
    converted = pm.run_passes(model, "fc-to-conv")
    assert isinstance(converted, graphconv.Model) and converted.graph.find("conv") and not converted.graph.find("fc")
    assert lenet.find("fc")  # the model's own graph is left as it was
    assert not pm.run_passes(SPECS / "lenet.yaml", "fc-to-conv").find("fc")


def test_timings_table(lenet):
    manager = PassManager(["fc-to-conv", "fuse-conv-activation"])
    manager.run(lenet)
    table = manager.timings_table()
    assert "shape-inference (auto)" in table and "fuse-conv-activation" in table and "total" in table
    long = pm.timings_table([pm.PassRecord("a-plugin-pass-with-a-long-name", 0.25, True, True)])
    head, row = long.splitlines()[:2]  # a name past 26 characters ran into its time
    assert row.split() == ["a-plugin-pass-with-a-long-name", "(auto)", "250.00", "100%", "yes"]
    assert head.index("ms") + 2 == row.index("250.00") + len("250.00")


def test_builtin_housekeeping_passes():
    graph = load_spec(SPECS / "tinydag.yaml")
    graph.add("unused", "relu", ["stem"])
    out = graphconv.run_passes(graph, "remove-dropout,dead-node-elimination,fuse-conv-activation")
    assert not out.find("dropout") and "unused" not in out
    assert out.node("stem").params["activation"] == "relu" and "stem_relu" not in out
    assert out.node("b2").params["activation"] == "relu"
    x = np.random.default_rng(0).standard_normal((2, 3, 28, 24)).astype(np.float32)
    np.testing.assert_allclose(graphconv.Model(out).run(x), graphconv.Model(graph).run(x), rtol=1e-5, atol=1e-6)


# ---- plugins ---------------------------------------------------------------------------

def test_plugin_from_file_runs_end_to_end(lenet, capsys):
    pm.load_plugin(str(ROOT / "examples" / "my_passes.py"))
    info = pm.get_pass("strip-softmax")
    assert info.origin.startswith("plugin ") and info.origin.endswith("my_passes.py")
    out = graphconv.run_passes(lenet, "fc-to-conv,strip-softmax,count-ops{prefix=>>}")
    assert out.output.name == "fc5"
    assert ">> conv x5, maxpool x2, relu x4" in capsys.readouterr().out


def test_plugin_from_module(tmp_path, monkeypatch):
    (tmp_path / "team_passes.py").write_text(textwrap.dedent("""
        from graphconv.pass_manager import register_pass

        @register_pass("team-noop", "does nothing")
        def team_noop(graph):
            return False
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    pm.load_plugin("team_passes")
    assert pm.get_pass("team-noop").origin == "plugin team_passes"


def test_plugin_module_in_the_working_folder_and_a_folder_given_as_a_plugin(tmp_path, monkeypatch):
    """The `graphconv` script's sys.path starts with its own folder, not the working one,
    so `--plugin my_passes` beside the user failed where `python -m graphconv` found it;
    a folder was 'plugin file not found'."""
    (tmp_path / "beside_passes.py").write_text(textwrap.dedent("""
        from graphconv.pass_manager import register_pass

        @register_pass("beside-noop", "does nothing")
        def beside_noop(graph):
            return False
    """))
    # As the `graphconv` script has it: neither '' (python -m's) nor the working folder.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    path_before = list(sys.path)
    pm.load_plugin("beside_passes")  # the working folder is tmp_path (conftest)
    assert pm.get_pass("beside-noop").origin == "plugin beside_passes" and sys.path == path_before
    (tmp_path / "team").mkdir()
    with pytest.raises(graphconv.GraphconvError, match=r"team: a plugin is a .py file or an importable module's "
                                                       r"name, not a folder"):
        pm.load_plugin(str(tmp_path / "team"))


def test_plugin_from_entry_point(tmp_path, monkeypatch):
    dist = tmp_path / "graphconv_extra-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: graphconv-extra\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[graphconv.passes]\nextra = graphconv_extra_passes\n")
    (tmp_path / "graphconv_extra_passes.py").write_text(textwrap.dedent("""
        from graphconv.pass_manager import register_pass

        @register_pass("extra-noop", "from an installed package")
        def extra_noop(graph):
            return False
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(pm, "_builtins_loaded", False)
    pm.load_builtin_passes()
    assert pm.get_pass("extra-noop").origin == "entry point 'extra' (graphconv-extra)"


def test_broken_plugins_are_user_errors(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import does_not_exist\n")
    with pytest.raises(PassError, match=r"plugin '.*broken.py' failed to import: ModuleNotFoundError"):
        pm.load_plugin(str(broken))
    leaving = tmp_path / "leaving.py"
    leaving.write_text("import sys\nsys.exit(0)\n")  # the command exited 0, nothing written, nothing said
    with pytest.raises(PassError, match=r"plugin '.*leaving.py' called sys.exit\(0\) as it was imported"):
        pm.load_plugin(str(leaving))
    dup = tmp_path / "dup.py"
    dup.write_text("from graphconv.pass_manager import register_pass\n"
                   "register_pass('fc-to-conv', 'mine')(lambda graph: False)\n")
    with pytest.raises(PassError, match="already registered by built-in"):
        pm.load_plugin(str(dup))
    with pytest.raises(graphconv.GraphconvError, match="missing.py: plugin file not found"):
        pm.load_plugin(str(tmp_path / "missing.py"))


def test_a_pass_that_edits_the_graph_but_returns_false_is_caught(lenet):
    @register_pass("sneaky", "removes softmax but says it changed nothing")
    def sneaky(graph):
        graph.remove("prob")
        return False

    with pytest.raises(PassError, match="pass 'sneaky' .* changed the graph but returned False"):
        PassManager("shape-inference,sneaky").run(lenet)


def test_the_verifier_names_a_missing_parameter(lenet):
    @register_pass("half-built-conv", "adds a conv without its out_channels, which has no default")
    def half_built_conv(graph):
        graph.insert_after("relu1", "extra", "conv", {"kernel_size": 1})

    relu1_line = lenet.node("relu1").loc.line
    with pytest.raises(PassError, match=rf"pass 'half-built-conv' \(.*?\) broke the IR: .*lenet.yaml:{relu1_line} \(a pass added "
                                        r"it after 'relu1'\): layer 'extra': conv is "
                                        r"missing required parameter \['out_channels'\]"):
        PassManager("half-built-conv").run(lenet)


def test_a_pass_removing_the_output_layer_is_told_the_output_moved(lenet):
    @register_pass("drop-last", "removes the last layer")
    def drop_last(graph):
        graph.remove(graph.output)
        return True

    fc_layers_and_softmax = 5  # prob, fc5, relu4, fc4, relu3: each cell still reads the whole crop through fc3
    PassManager("shape-inference" + ",drop-last" * fc_layers_and_softmax).run(lenet)
    with pytest.raises(PassError, match=r"pass 'drop-last' \(.*?\) broke the IR: .*layer 'pool2': the first output cell "
                                        r"\(the output is layer 'pool2' now, 'prob' when the passes began"):
        PassManager("shape-inference" + ",drop-last" * (fc_layers_and_softmax + 1)).run(lenet)


def test_a_pass_that_changes_what_each_cell_sees_is_named(lenet):
    """Dropping a pooling's stride makes a finer map of wrong cells (each reads a smaller
    field than its crop); the verifier names the pass, where nothing used to notice."""
    @register_pass("unstrided-pool", "drops pool2's stride: a naive finer map")
    def unstrided_pool(graph):
        graph.set_params("pool2", stride=1)
        return True

    with pytest.raises(PassError, match=r"pass 'unstrided-pool' \(.*?\) broke the IR: .*the first output cell read "
                                        r"rows 0 to 31, columns 0 to 31 of the 32x32 crop at stride 4x4, and now "
                                        r"reads rows 0 to 23, columns 0 to 23 of the 32x32 crop at stride 2x2"):
        PassManager("shape-inference,fc-to-conv,unstrided-pool").run(lenet)
    finer = PassManager("shape-inference,fc-to-conv,output-stride{stride=2}").run(lenet)
    assert graphconv.Model(finer).output_stride == (2, 2), "a finer stride made properly passes"

    @register_pass("dilate-conv1", "dilates and pads conv1: each cell reads past its crop")
    def dilate_conv1(graph):
        graph.set_params("conv1", dilation=2, padding=4)

    with pytest.raises(PassError, match=r"pass 'dilate-conv1' \(.*?\) broke the IR: .* now reads rows -4 to 31"):
        PassManager("shape-inference,fc-to-conv,dilate-conv1").run(lenet)


def test_a_cell_may_come_to_read_more_of_its_own_crop(write_spec):
    """conv-to-fc gives the fc the whole 7x7 map where the conv's windows read 6x6 of it
    (the fc's weights there are zero): the same cell, and not refused."""
    graph = load_spec(write_spec("""
        name: c2f
        input: {shape: [1, 7, 7]}
        layers:
          - {name: conv1, op: conv, out_channels: 4, kernel_size: 2, stride: 2}
          - {name: fc1, op: fc, out_features: 10}
    """))
    x = np.random.default_rng(0).standard_normal((1, 1, 7, 7)).astype(np.float32)
    from graphconv.runtime import run_reference
    np.testing.assert_allclose(run_reference(PassManager("shape-inference,conv-to-fc").run(graph), x).ravel(),
                               run_reference(graph, x).ravel(), rtol=1e-5, atol=1e-6)


def test_a_pass_must_keep_the_labels_naming_the_outputs_channels(lenet):
    lenet.meta["labels"] = [str(i) for i in range(10)]

    @register_pass("keep-two-classes", "keeps classes 0 and 1 of fc5 but not their names")
    def keep_two_classes(graph):
        fc5 = graph.node("fc5")
        graph.set_weights(fc5, weight=fc5.weights["weight"][:2], bias=fc5.weights["bias"][:2])
        graph.set_params(fc5, out_features=2)
        return True

    with pytest.raises(PassError, match=r"pass 'keep-two-classes' \(.*?\) broke the IR: .*the output has 2 channels "
                                        r"and graph.meta\['labels'\] names 10 classes"):
        PassManager("keep-two-classes").run(lenet)


@pytest.mark.parametrize("result", ["graph", 1.5, "yes"])
def test_a_pass_returns_a_bool_or_none(lenet, result):
    """A pass written in functional style (returning an edited copy) would be ignored."""
    name = f"returns-{type(result).__name__}"

    @register_pass(name, "returns something other than a bool")
    def functional(graph):
        if result == "graph":
            copy = graph.copy()
            copy.remove("prob")
            return copy
        return result

    with pytest.raises(PassError, match=rf"pass '{name}' .* returned .*edits the graph it is given in place"):
        PassManager(name).run(lenet)


def test_a_bad_parameter_value_is_refused_at_the_passs_own_line(lenet):
    @register_pass("zero-stride", "sets a stride of 0")
    def zero_stride(graph):
        graph.set_params("conv1", stride=(0, 0))

    with pytest.raises(PassError, match=r"layer 'conv1': 'stride' must be an integer >= 1 .* \(in pass 'zero-stride'"):
        PassManager("zero-stride").run(lenet)


def test_a_layer_a_shape_preserving_pass_replaces_needs_its_shape(lenet):
    @register_pass("relu-to-clip", "relu -> clip, claiming shapes stay valid", preserves=("shapes",))
    def relu_to_clip(graph):
        for relu in graph.find("relu"):
            graph.replace(relu, "clip", {"min": 0.0, "max": 6.0})

    with pytest.raises(PassError, match=r"layer 'relu1': annotated shape None .* call graph.set_shape"):
        PassManager("shape-inference,relu-to-clip").run(lenet)


def test_a_module_may_register_its_pass_again_another_may_not():
    """Re-running a notebook cell, or reloading the module, registers the same name again:
    the new definition replaces the old; another module's is still refused."""
    @register_pass("notebook-pass", "first definition")
    def first(graph):
        return False

    @register_pass("notebook-pass", "second definition")
    def second(graph):
        return False

    assert pm.get_pass("notebook-pass").description == "second definition"
    foreign = eval(compile("lambda graph: False", "someone_else.py", "eval"))  # defined in another file
    foreign.__module__ = "someone_else"
    with pytest.raises(PassError, match="pass 'notebook-pass' is already registered by module test_pass_manager"):
        register_pass("notebook-pass", "a third")(foreign)


def test_a_pass_taking_any_options_is_refused_at_registration():
    with pytest.raises(PassError, match=r"pass 'catch-all': options are named parameters with defaults"):
        @register_pass("catch-all", "takes **options")
        def catch_all(graph, **options):
            return False


def test_a_pass_with_no_place_for_the_graph_is_refused_at_registration():
    """It was accepted, then failed when run with only "TypeError: q() takes 0 positional
    arguments but 1 was given", no file or line."""
    def q():
        return False

    def r(*, k: int = 1):
        return False
    for fn in (q, r):
        with pytest.raises(PassError, match=rf"pass 'no-graph': its function takes the graph first \(`def "
                                            rf"{fn.__name__}\(graph\)`\)"):
            register_pass("no-graph", "takes no graph")(fn)


def test_a_manager_run_twice_records_each_run_alone(lenet):
    manager = PassManager("shape-inference,fc-to-conv")
    manager.run(lenet)
    manager.run(lenet)
    assert [r.name for r in manager.records] == ["shape-inference", "fc-to-conv"]


def test_compile_model_takes_passes_with_options_in_a_list(lenet):
    model = graphconv.compile_model(lenet, list(pm.DEFAULT_PIPELINE) + ["output-stride{stride=2}"])
    assert model.output_stride == (2, 2)
    model = graphconv.compile_model(lenet, ["shape-inference", "fc-to-conv", ("output-stride", {"stride": 2})])
    assert model.output_stride == (2, 2)


def test_verify_checks_the_pipeline_given_with_the_users_passes(tmp_path, capsys):
    from graphconv.cli import main
    plugin = tmp_path / "scaling.py"
    plugin.write_text(textwrap.dedent('''
        from graphconv.pass_manager import register_pass

        @register_pass("double-fc4", "doubles fc4's weights: a pass that changes the scores")
        def double_fc4(graph):
            node = graph.node("fc4")
            graph.set_weights(node, weight=node.weights["weight"] * 2)
    '''))
    args = ["verify", str(SPECS / "lenet.yaml"), "--input-size", "40", "40", "--plugin", str(plugin), "--passes"]
    assert main(args + ["shape-inference,fc-to-conv"]) == 0
    assert main(args + ["shape-inference,fc-to-conv,double-fc4"]) == 1
    assert "result: FAIL" in capsys.readouterr().out


def test_a_pass_may_return_a_numpy_bool(lenet):
    @register_pass("numpy-bool", "returns np.bool_, as `return mask.any()` does")
    def numpy_bool(graph):
        return np.bool_(False)

    PassManager("numpy-bool").run(lenet)


def test_a_pass_option_naming_no_layer_is_a_user_error_naming_the_pass(lenet, tmp_path):
    """graph.node of a missing layer raised a KeyError, which the manager reported as a
    crash of the plugin: "crashed: KeyError: \"no node named 'nope'\""."""
    plugin = tmp_path / "clip_passes.py"
    plugin.write_text(textwrap.dedent("""
        from graphconv.pass_manager import register_pass

        @register_pass("insert-clip-at", "insert a clip after a layer", requires=("shapes",))
        def insert_clip_at(graph, layer: str, lo: float = 0.0, hi: float = 6.0) -> bool:
            node = graph.node(layer)
            graph.insert_after(node, graph.fresh_name(layer + "_clip"), "clip", {"min": lo, "max": hi})
            return True
    """))
    pm.load_plugin(str(plugin))
    with pytest.raises(PassError) as err:
        PassManager("insert-clip-at{layer=conv_1}").run(lenet)
    message = str(err.value)
    assert "no layer named 'conv_1' (did you mean 'conv1'" in message and "crashed" not in message
    assert re.search(r"\(in pass 'insert-clip-at' at \S*clip_passes.py:\d+ in insert_clip_at\)", message)
    with pytest.raises(PassError, match=r"has no option 'foo' \(it takes: layer=\(required\), lo=0.0, hi=6.0\)"):
        PassManager("insert-clip-at{layer=conv1,foo=1}")
    with pytest.raises(KeyError):  # code that asked with `except KeyError` still works
        lenet.node("nope")


def test_printing_the_ir_around_a_pass_the_pipeline_does_not_run_is_refused():
    """`--print-ir-after X` with X registered but not in the pipeline printed nothing, exit 0."""
    with pytest.raises(PassError, match=r"pass 'fold-pad' is not in the pipeline \(fc-to-conv\), so it would "
                                        r"print nothing"):
        PassManager(["fc-to-conv"], print_ir_after={"fold-pad"})
    PassManager(["fc-to-conv"], print_ir_after={"shape-inference"})  # run for fc-to-conv, automatically
    PassManager(["fc-to-conv"], print_ir_before={"fc-to-conv"}, print_ir_after={"all"})


def test_describe_options_joins_with_the_separator_given_and_keeps_text_defaults_whole():
    """cli's `describe_options(info).replace(", ", ",")` also squeezed a text default's own
    ", "; a separator joins the options and leaves the defaults as they are."""
    def tagging(graph, label: str = "a, b", k: int = 2):
        return False

    info = pm.PassInfo("tagging", "test", tagging)
    assert pm.describe_options(info) == "label=a, b, k=2"  # the default separator, as before
    assert pm.describe_options(info, separator=",") == "label=a, b,k=2"
    assert pm.describe_options(pm.PassInfo("none", "test", lambda graph: False), separator=",") == "no options"


@pytest.mark.parametrize("pipeline", [
    ["shape-inference", "fc-to-conv", "output-stride{stride=2}"],
    ["shape-inference", "fc-to-conv", ("output-stride", {"stride": 2})],
    ["shape-inference,fc-to-conv", "output-stride{stride=2}"],
    "shape-inference,fc-to-conv,output-stride{stride=2}",
])
def test_run_passes_the_manager_and_compile_model_take_the_same_pipelines(lenet, pipeline):
    out = pm.run_passes(lenet, pipeline)
    assert graphconv.Model(out).output_stride == (2, 2)
    assert graphconv.compile_model(lenet, pipeline).output_stride == (2, 2)
    assert [name for name, _ in PassManager(pipeline).items] == ["shape-inference", "fc-to-conv", "output-stride"]


@pytest.mark.parametrize("pipeline", [5, [5], [("fc-to-conv", 2)], None])
def test_a_pipeline_of_another_kind_is_a_user_error(lenet, pipeline):
    with pytest.raises(GraphconvError, match="pipeline"):
        pm.run_passes(lenet, pipeline)
    if pipeline is not None:  # compile_model's None is the default pipeline
        with pytest.raises(GraphconvError, match="pipeline"):
            graphconv.compile_model(SPECS / "lenet.yaml", pipeline)


def test_a_plugin_pass_that_adds_a_dangling_edge_is_named_with_the_node(lenet):
    @register_pass("dangling", "an edge to a node that does not exist")
    def dangling(graph):
        graph.nx.add_edge("conv1", "ghost", index=0)
        return True
    with pytest.raises(PassError, match=r"pass 'dangling' \(.*?\) broke the IR: layer 'ghost': a node with no op"):
        pm.run_passes(lenet, "dangling")


def test_a_pass_reading_shapes_it_did_not_require_is_told_to_require_them(lenet):
    @register_pass("reads-shapes", "reads node.shape without requires")
    def reads_shapes(graph):
        return graph.node("conv1").shape[0] > 100
    with pytest.raises(PassError, match=r"crashed at \S+:\d+ in reads_shapes: TypeError.*requires=\(\"shapes\",\)"):
        pm.run_passes(lenet, "reads-shapes")
    pm.run_passes(lenet, "shape-inference,reads-shapes")  # shapes present: no crash


def test_a_pass_writing_into_weights_is_told_to_use_set_weights(lenet):
    @register_pass("zero-conv1", "writes weights in place")
    def zero_conv1(graph):
        graph.node("conv1").weights["weight"][...] = 0
        return True
    with pytest.raises(PassError, match=r"read-only.*graph.set_weights"):
        pm.run_passes(lenet, "zero-conv1")


def test_a_layer_a_pass_adds_with_some_params_gets_the_others_defaults(lenet):
    @register_pass("identity-conv", "a 1x1 conv given only its channels and kernel", requires=("shapes",))
    def identity_conv(graph):
        c = graph.node("pool1").shape[0]
        graph.insert_after("pool1", "pool1_id", "conv", {"out_channels": c, "kernel_size": 1},
                           {"weight": np.eye(c, dtype=np.float32).reshape(c, c, 1, 1),
                            "bias": np.zeros(c, np.float32)})
        return True
    out = pm.run_passes(lenet, "identity-conv")
    assert out.node("pool1_id").params["padding"] == (0, 0)


# ---- `default` in a pipeline -------------------------------------------------------------

@pytest.mark.parametrize("pipeline", ["default,count-layers", ["default", "count-layers"],
                                      [("default", {}), ("count-layers", {})]])
def test_default_in_a_pipeline_is_the_default_passes_in_its_place(lenet, pipeline):
    """`--passes default,my-pass` runs a plugin pass after the default pipeline, in every
    spelling the CLI and the API share; the compiled model records the passes it ran."""
    seen = []

    @register_pass("count-layers", "test")
    def count_layers(graph) -> bool:
        seen.append(len(graph.layers()))
        return False

    names = [name for name, _ in PassManager(pipeline).items]
    assert names == list(pm.DEFAULT_PIPELINE) + ["count-layers"]
    compiled = graphconv.compile_model(lenet, pipeline)
    assert seen == [len(graphconv.compile_model(lenet).graph.layers())]
    assert compiled.graph.meta["compiled"]["passes"] == ",".join(names)


def test_default_expands_where_it_stands_and_takes_no_options(lenet):
    names = [name for name, _ in PassManager("shape-inference,remove-dropout,default,receptive-field").items]
    assert names == ["shape-inference", "remove-dropout", *pm.DEFAULT_PIPELINE, "receptive-field"]
    with pytest.raises(PassError, match="'default' stands for the default passes .* and takes no options"):
        PassManager("default{k=1}")
    with pytest.raises(PassError, match="'default' cannot be a pass name"):
        register_pass("default", "test")


def test_an_unknown_pass_says_how_to_load_ones_own():
    with pytest.raises(PassError, match=r"unknown pass 'swap-relu-maxpool' \(registered: .*\) \(a pass of your own\? "
                                        r"load it with --plugin FILE_OR_MODULE"):
        PassManager("shape-inference,swap-relu-maxpool")


def test_cli_compile_takes_default_in_passes_and_says_how_to_load_a_plugin(tmp_path):
    from conftest import graphconv_in_process
    plugin = ROOT / "examples" / "my_passes.py"
    done = graphconv_in_process("compile", SPECS / "lenet.yaml", "-o", tmp_path / "out", "--plugin", plugin,
                                "--passes", "default,strip-softmax")
    assert done.returncode == 0, done.stderr
    passes = graphconv.load(tmp_path / "out").graph.meta["compiled"]["passes"]
    assert passes == ",".join(pm.DEFAULT_PIPELINE) + ",strip-softmax"
    unknown = graphconv_in_process("compile", SPECS / "lenet.yaml", "-o", tmp_path / "x", "--passes",
                                   "shape-inference,swap-relu-maxpool")
    assert unknown.returncode == 2
    assert "(a pass of your own? load it with --plugin FILE_OR_MODULE" in unknown.stderr
    assert "'default' stands for the default passes" in " ".join(
        graphconv_in_process("compile", "--help").stdout.split())


def test_a_refused_replace_or_set_weights_leaves_the_graph_as_it_was(lenet):
    """A pass that catches the error of a bad `replace` (and skips that layer, as a careful
    author would) found the layer already deleted and its user reading nothing; a refused
    `set_weights` had stored the arrays before the bad one."""
    before = str(lenet)
    with pytest.raises(GraphconvError):
        lenet.replace("relu1", "clip", {"max": "six"})
    with pytest.raises(ValueError, match="already exists"):
        lenet.replace("relu1", "clip", {"max": 6.0}, name="conv1")
    zeros = np.zeros_like(lenet.node("conv1").weights["weight"])
    with pytest.raises(GraphconvError, match="NaN"):
        lenet.set_weights("conv1", weight=zeros, bias=np.full(6, np.nan, np.float32))
    assert str(lenet) == before
    lenet.verify()


def test_shapes_a_pass_did_not_keep_are_forgotten_not_left_stale(lenet):
    """After a pass that changed the graph without keeping the shapes, each layer kept its
    old shape: printed as if current (conv1 of 8 channels "-> 6x28x28") and read by a
    later pass that did not require shapes."""
    seen = []

    @register_pass("widen-conv1-for-shapes", "test")
    def widen(graph):
        conv = graph.node("conv1")
        graph.set_params(conv, out_channels=8)
        graph.set_weights(conv, weight=np.zeros((8, *conv.weights["weight"].shape[1:]), np.float32),
                          bias=np.zeros(8, np.float32))
        graph.set_weights("conv2", weight=np.zeros((16, 8, 5, 5), np.float32))
        return True

    @register_pass("reads-a-shape", "test")
    def reads(graph):
        seen.append(graph.node("conv1").shape)
        return False

    PassManager(["shape-inference", "widen-conv1-for-shapes", "reads-a-shape"]).run(lenet)
    assert seen == [None]

    @register_pass("widen-and-infer", "test", provides=("shapes",))
    def widen_and_infer(graph):  # a pass that edits, then sets every shape itself: they stand
        widen(graph)
        for name, shape in graphconv.shapes.infer_shapes(graph).items():
            graph.set_shape(name, shape)
        return True

    seen.clear()
    PassManager(["widen-and-infer", "reads-a-shape"]).run(lenet)
    assert seen == [(8, 28, 28)]
    out = PassManager(["shape-inference", "widen-conv1-for-shapes", "shape-inference"]).run(lenet)
    assert out.node("conv1").shape == (8, 28, 28)


def test_a_provider_that_needs_options_is_named_not_run_without_them(lenet):
    @register_pass("bounds-with-option", "provides bounds given k", provides=("bounds",))
    def bounds(graph, k: int):
        return False

    @register_pass("needs-bounds", "test", requires=("bounds",))
    def needs(graph):
        return False

    with pytest.raises(PassError, match=r"pass 'needs-bounds' requires 'bounds', which pass 'bounds-with-option' "
                                        r"provides, but it needs option k: list bounds-with-option\{k=...\} "
                                        r"before 'needs-bounds'"):
        PassManager(["needs-bounds"]).run(lenet)
    PassManager(["bounds-with-option{k=3}", "needs-bounds"]).run(lenet)


@pytest.mark.parametrize("future", ["", "from __future__ import annotations"], ids=["objects", "text"])
def test_options_annotated_at_run_time_are_checked(tmp_path, lenet, future):
    """list[float] (whose __name__ is "list") and typing.Optional[int] (whose __name__ is
    "Optional") were taken for options of any value, in a plugin without `from __future__
    import annotations`; with it, "typing.Optional[int]" as written was too."""
    plugin = tmp_path / "annotated_passes.py"
    plugin.write_text(future + textwrap.dedent("""
        import typing
        from typing import List
        from graphconv.pass_manager import register_pass

        @register_pass("annotated-list", "test")
        def annotated_list(graph, mean: list[float], also: List[int] = (1,)):
            return False

        @register_pass("annotated-optional", "test")
        def annotated_optional(graph, k: typing.Optional[int] = None, m: typing.List[float] = (0.5,),
                               t: typing.Tuple[int, ...] = (1,), x: float = 1.0):
            return False
    """))
    pm.load_plugin(str(plugin))
    for pipeline, option in (["annotated-list{mean=abc}", "mean"], ["annotated-list{mean=[1],also=[x]}", "also"],
                             ["annotated-optional{k=abc}", "k"], ["annotated-optional{m=abc}", "m"],
                             ["annotated-optional{k=2.5}", "k"], ["annotated-optional{t=[1.5]}", "t"],
                             ["annotated-optional{x=nan}", "x"], ["annotated-optional{x=1e400}", "x"]):
        with pytest.raises(PassError, match=f"option '{option}'"):
            PassManager([pipeline])
    PassManager(["annotated-list{mean=[0.5,1]}", "annotated-optional{k=3}"]).run(lenet)
    PassManager([("annotated-optional", {"k": np.int64(3)})]).run(lenet)  # numpy's integers are integers


def test_two_plugin_files_of_one_name_are_two_modules(tmp_path):
    """`--plugin a/my_passes.py --plugin b/my_passes.py`: both became the module
    graphconv_plugin_my_passes, so the second's pass silently replaced the first's."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "my_passes.py").write_text(textwrap.dedent(f"""
            from graphconv.pass_manager import register_pass

            @register_pass("clashing-pass", "from {folder}")
            def clashing(graph):
                return False
        """))
    pm.load_plugin(str(tmp_path / "a" / "my_passes.py"))
    pm.load_plugin(str(tmp_path / "a" / "my_passes.py"))  # the same file again: its own pass, reloaded
    with pytest.raises(PassError, match=r"pass 'clashing-pass' is already registered by plugin \S+a/my_passes.py; "
                                        r"plugin \S+b/my_passes.py registers it again"):  # b was not named
        pm.load_plugin(str(tmp_path / "b" / "my_passes.py"))
    assert pm.get_pass("clashing-pass").description == "from a"


def test_a_plugin_file_imported_and_loaded_by_path_is_one_plugin(tmp_path, monkeypatch):
    """`import team_passes` in a notebook, then `load_plugin("team_passes.py")` (or
    --plugin of it): one file, whose passes were refused as registered twice."""
    import importlib

    (tmp_path / "team_passes.py").write_text(textwrap.dedent("""
        from graphconv.pass_manager import register_pass

        @register_pass("imported-twice-pass", "from team_passes")
        def imported_twice(graph):
            return False
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "team_passes", raising=False)
    importlib.import_module("team_passes")
    pm.load_plugin(str(tmp_path / "team_passes.py"))
    assert pm.get_pass("imported-twice-pass").description == "from team_passes"


def test_a_badly_named_pass_says_which_plugin_registers_it(tmp_path):
    (tmp_path / "badname.py").write_text(textwrap.dedent("""
        from graphconv.pass_manager import register_pass

        @register_pass("Bad_Name", "upper case")
        def bad(graph):
            return False
    """))
    with pytest.raises(PassError, match=r"pass name 'Bad_Name' \(plugin \S+badname.py\) must be lower-case"):
        pm.load_plugin(str(tmp_path / "badname.py"))


def test_a_broken_installed_plugin_loses_its_own_passes_only(tmp_path, monkeypatch):
    """One broken plugin package stopped every command, `graphconv passes` included."""
    dist = tmp_path / "graphconv_broken-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: graphconv-broken\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[graphconv.passes]\nbroken = graphconv_broken_passes\n")
    (tmp_path / "graphconv_broken_passes.py").write_text("import does_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(pm, "_builtins_loaded", False)
    monkeypatch.setattr(pm, "_broken_entry_points", [])
    assert pm.get_pass("fc-to-conv").name == "fc-to-conv"
    assert pm.broken_entry_points() == [
        "plugin entry point 'broken' (graphconv_broken_passes, package graphconv-broken) failed to import, "
        "its passes are missing: ModuleNotFoundError: No module named 'does_not_exist'"]
    with pytest.raises(PassError, match=r"unknown pass 'broken-pass' .*; plugin entry point 'broken' .*"
                                        r"No module named 'does_not_exist'"):
        pm.get_pass("broken-pass")


def test_a_source_tree_s_graphconv_finds_its_passes_beside_it(tmp_path):
    """Python started in a checkout imports its graphconv/ folder, whose passes are the
    `passes/` beside it (installed as graphconv.passes): after `pip install .` that was
    "No module named 'graphconv.passes'", and a clone on PYTHONPATH ran an installed
    copy's passes."""
    import shutil
    import subprocess

    root = Path(pm.__file__).resolve().parent.parent
    shutil.copytree(root / "graphconv", tmp_path / "graphconv", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(root / "passes", tmp_path / "passes", ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import graphconv, graphconv.pass_manager as pm; pm.load_builtin_passes(); "
            "import graphconv.passes as p; print(graphconv.__file__); print(p.__file__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / "graphconv" / "__init__.py"),
                                     str(tmp_path / "passes" / "__init__.py")]
