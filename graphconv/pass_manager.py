"""The public pass API: register passes, build pipelines, run them with checks.

A pass is a plain function `fn(graph, **options) -> bool | None` that edits a
`graphconv.ir.Graph` in place and returns whether it changed anything (None counts
as "changed"). It is registered with a name, a one-line description and what it
needs and gives:

    @register_pass("my-pass", "what it does in one line", requires=("shapes",))
    def my_pass(graph, factor: int = 2) -> bool: ...

* `requires`: analyses the pass reads (e.g. "shapes": every node's `shape`). The
  manager runs the pass that `provides` a missing analysis first.
* `provides`: analyses the pass computes (shape-inference provides "shapes").
* `preserves`: analyses still valid after the pass changed the graph; every other
  analysis is invalidated by a change.

Pipelines are text, `shape-inference,fc-to-conv,output-stride{stride=16}`, or lists;
`default` in one stands for DEFAULT_PIPELINE (`default,my-pass`).
After every pass that changed the graph the verifier checks the IR's invariants and
names the pass that broke them.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import math
import numbers
import os
import re
import sys
import threading
import time
import typing
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TextIO

import numpy as np

from graphconv.errors import GraphconvError, PassError, agreeing, nearest, shown, where_it_crashed
from graphconv.ir import Graph
from graphconv.shapes import infer_shapes

ENTRY_POINT_GROUP = "graphconv.passes"
DEFAULT_PIPELINE = ("shape-inference", "remove-dropout", "dead-node-elimination", "fold-pad", "fold-batchnorm",
                    "global-pool-to-window", "split-fc-over-concat", "remove-flatten", "fc-to-conv", "keep-crop-cells",
                    "fuse-conv-activation", "fuse-conv-add", "fuse-concat-batchnorm", "fuse-batchnorm-activation")
# what makes a classifier slide
CONVERTING_PASSES = ("global-pool-to-window", "split-fc-over-concat", "remove-flatten", "fc-to-conv", "keep-crop-cells")
CLASSIFIER_PIPELINE = tuple(name for name in DEFAULT_PIPELINE if name not in CONVERTING_PASSES)
"""The default passes that leave a network the classifier it was (batch norm folded,
activations and residual adds fused), without the conversion to a sliding network: what
runs a classifier crop by crop (`run --crops`) and what the benchmarks time as one."""
RENAMED = {"fuse-conv-relu": "fuse-conv-activation"}  # old names pipelines may still give
DEFAULT_WORD = "default"
"""In a pipeline, the default passes in its place: `default,my-pass` runs a plugin pass
after them without copying twelve names. Not a pass name, so no pass may take it."""


@dataclass(frozen=True)
class PassInfo:
    """A registered pass: its function and what the manager needs to know about it."""

    name: str
    description: str
    run: Callable[..., bool | None]
    requires: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    preserves: tuple[str, ...] = ()
    origin: str = ""
    analysis: bool = False  # it only reads the graph (a report, a check): it changes nothing, and is held to it

    def __repr__(self) -> str:
        return f"PassInfo({self.name!r}, {self.description!r}, origin={self.origin!r})"

    @property
    def options(self) -> dict[str, Any]:
        """The pass's options and their defaults, read from its signature (None for an
        option without a default)."""
        params = list(inspect.signature(self.run).parameters.values())[1:]
        return {p.name: (None if p.default is inspect.Parameter.empty else p.default) for p in params}

    @property
    def required_options(self) -> tuple[str, ...]:
        """Options a pipeline must give: those without a default. A default of None makes
        an option optional, unless its annotation rules None out (`stride: int = None`,
        the form passes used before None meant optional), which still counts as required."""
        params = list(inspect.signature(self.run).parameters.values())[1:]
        return tuple(p.name for p in params if p.default is inspect.Parameter.empty
                     or (p.default is None and _excludes_none(_annotation_text(p.annotation))))

    def option_annotation(self, name: str) -> str:
        """The option's type annotation as text ("" when it has none)."""
        return _annotation_text(inspect.signature(self.run).parameters[name].annotation)


_REGISTRY: dict[str, PassInfo] = {}
_loading_origin: list[str] = []
_builtins_loaded = False
_builtins_loading = False  # the import under way, in the thread that holds the lock
_builtins_lock = threading.RLock()
_broken_entry_points: list[str] = []  # why each plugin package that failed to import is missing


def register_pass(name: str, description: str, *, requires: Sequence[str] = (),
                  provides: Sequence[str] = (), preserves: Sequence[str] = (), analysis: bool = False) -> Callable:
    """Decorator: register `fn(graph, **options)` as the pass `name`. `analysis=True`: it
    reads the graph and changes nothing (a report, a check, an annotation), so no note
    says it changed nothing, and an edit it makes is refused."""
    by = f" ({_loading_origin[-1]})" if _loading_origin else ""
    if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
        raise PassError(f"pass name '{name}'{by} must be lower-case letters, digits and '-'")
    if name == DEFAULT_WORD:
        raise PassError(f"'{DEFAULT_WORD}' cannot be a pass name{by}: in a pipeline it stands for the default passes")

    def decorator(fn: Callable) -> Callable:
        load_builtin_passes()  # a name clashing with a built-in refused here, not at every later compile
        existing = _REGISTRY.get(name)
        origin = _loading_origin[-1] if _loading_origin else _origin_of(fn)
        if existing is not None and not _same_source(existing.run, fn):
            raise PassError(f"pass '{name}' is already registered by {existing.origin}; {origin} registers it "
                            "again (rename one)")
        parameters = list(inspect.signature(fn).parameters.values())
        catch_all = [p.name for p in parameters
                     if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
        if catch_all:
            raise PassError(f"pass '{name}': options are named parameters with defaults (`def {fn.__name__}(graph, "
                            f"k: int = 1)`), so a pipeline's options can be checked; not *{catch_all[0]}")
        if not parameters or parameters[0].kind not in (inspect.Parameter.POSITIONAL_ONLY,
                                                        inspect.Parameter.POSITIONAL_OR_KEYWORD):
            raise PassError(f"pass '{name}'{by}: its function takes the graph first (`def {fn.__name__}(graph)`), "
                            f"then its options; {fn.__name__}{inspect.signature(fn)} has no place for it")
        _REGISTRY[name] = PassInfo(name, description, fn, tuple(requires), tuple(provides),
                                   tuple(preserves), origin, bool(analysis))
        return fn

    return decorator


def _weight_sums(graph: Graph) -> dict[tuple[str, str], tuple[int, int]]:
    """Each weight array's identity and CRC-32: what a plugin pass must leave as it found
    it. Arrays are shared with the graph the pipeline was given (and with verify's
    reference classifier): one written in place (through the memory behind its read-only
    view) changed that reference too, and verify passed a wrong model."""
    import zlib
    return {(name, key): (id(array), zlib.crc32(np.ascontiguousarray(array).view(np.uint8)))
            for name, data in graph.nx.nodes(data=True)  # in no order: a pass may have left a cycle
            for key, array in (data.get("weights") or {}).items()}


def _checked_result(info: PassInfo, result, changed: bool) -> bool:
    """Whether the pass modified the graph, from what it returned (True/None: it did,
    False: it did not) held against what it did; a pass that returned anything else, or
    said False (or is an analysis) and changed the graph, is refused: the analyses it
    invalidated would be taken as current."""
    if result is not None and not isinstance(result, (bool, np.bool_)):  # `return mask.any()` is a bool too
        what = "a Graph" if isinstance(result, Graph) else shown(result)  # a copy it edited: lost
        raise PassError(f"pass '{info.name}' ({info.origin}) returned {what}; a pass edits the "
                        "graph it is given in place and returns True (or None) if it changed it, False if "
                        "not")
    if info.analysis and (changed or result is True):
        raise PassError(f"pass '{info.name}' ({info.origin}) is registered as an analysis (analysis=True: it "
                        "only reads the graph) but changed it; drop analysis=True from its @register_pass if it "
                        "is to edit the graph")
    modified = result is not False and not info.analysis
    if not modified and changed:
        raise PassError(f"pass '{info.name}' ({info.origin}) changed the graph but returned False; "
                        "return True (or None) when a pass edits the graph, so the analyses it "
                        "invalidates are recomputed")
    return modified


def _refuse_weights_written_in_place(graph: Graph, before: dict, info: PassInfo, given: Graph) -> None:
    """Refuse a pass that wrote into a weight array, which it can only do by reaching past
    the read-only view to the memory behind it (`ir._read_only`), so the numbers it
    overwrote are gone: the caller is told to load the graph again. The graph the
    pipeline was given holds the same array, written too: its version is bumped, so what
    was derived from it (a loaded Model's executors) is derived afresh from the weights
    it now holds, as a compile or a pickle of it reads them, not run on a packed copy of
    the old ones."""
    for (name, key), (identity, crc) in _weight_sums(graph).items():
        if before.get((name, key), (None, None))[0] == identity and before[name, key][1] != crc:
            given._changed()
            raise PassError(f"pass '{info.name}' ({info.origin}) wrote into layer '{name}'s {key} in place, "
                            "through the memory behind the read-only array: weight arrays are shared with the "
                            "graph the pipeline was given, which now holds the written numbers (load it again); "
                            f"give the layer a new array instead (graph.set_weights('{name}', {key}=...))")


def _structure(graph: Graph) -> tuple:
    """The graph's layers, ops, params and wiring: what a pass editing `graph.nx` itself
    changes without the graph's version knowing (which a False return then hid)."""
    nodes = sorted((name, data.get("op"), repr(sorted((data.get("params") or {}).items())))
                   for name, data in graph.nx.nodes(data=True))
    return tuple(nodes), tuple(sorted(graph.nx.edges(data="index"))), graph.nx.graph.get("output")


def _annotation_keys(graph: Graph) -> set[str]:
    return {key for _, data in graph.nx.nodes(data=True) for key in data.get("annotations") or ()}


def _plugin_origin(name: str) -> str:
    """" (plugin my_passes.py)" for a pass a plugin registered; "" for a built-in one."""
    info = _REGISTRY.get(name)
    return "" if info is None or info.origin.startswith("built-in") else f" ({info.origin})"


def _same_source(registered: Callable, again: Callable) -> bool:
    """Whether `again` is `registered` loaded anew: the same module reloaded, or the same
    file imported once as a module (`import my_passes`) and once by `load_plugin("my_passes.py")`."""
    if registered.__module__ == again.__module__:
        return True
    files = [getattr(getattr(fn, "__code__", None), "co_filename", None) for fn in (registered, again)]
    return None not in files and os.path.realpath(files[0]) == os.path.realpath(files[1])


def _origin_of(fn: Callable) -> str:
    """"built-in (passes/x.py)", "module my_passes", or the file of a function that has no
    module (code run by exec() with globals of its own)."""
    name = getattr(fn, "__module__", None)
    if name is None:
        code_file = getattr(getattr(fn, "__code__", None), "co_filename", None)
        return f"code {code_file}" if code_file else "code with no module"
    module = sys.modules.get(name)
    where = getattr(module, "__file__", None) or name
    if name.startswith("graphconv.passes."):
        return f"built-in ({Path(where).parent.name}/{Path(where).name})"
    return f"module {name}"


@contextlib.contextmanager
def _origin(label: str) -> Iterator[None]:
    _loading_origin.append(label)
    try:
        yield
    finally:
        _loading_origin.pop()


def load_builtin_passes() -> None:
    """Import the built-in passes (the top-level `passes/`, installed as `graphconv.passes`)
    and those of installed plugins that declare a `graphconv.passes` entry point (which
    may register ops and devices too). Done once, on first use of the registry.
    Under a lock: two threads running their first models at once (a Dask worker's
    threads) had one see the registry empty while the other was still importing it
    ("unknown pass 'channels-last' (registered: )"). The importing thread re-entering
    (a pass module using the registry) returns at once."""
    global _builtins_loaded, _builtins_loading
    if _builtins_loaded:
        return
    with _builtins_lock:
        if _builtins_loaded or _builtins_loading:
            return
        _builtins_loading = True
        try:
            _import_builtin_passes()
            _builtins_loaded = True
        finally:
            _builtins_loading = False


def _import_builtin_passes() -> None:
    """A plugin package whose entry point fails to import loses its own passes, not
    graphconv's: one broken install stopped every command, the built-in pipeline and
    `graphconv passes` (the way to find out which plugin it was) included. The failure is
    kept and said where it matters (see broken_entry_points)."""
    _import_the_passes_package()
    _broken_entry_points.clear()  # an import tried again (after a failure) says each once
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry.dist.name if entry.dist is not None else "?"
        with _origin(f"entry point '{entry.name}' ({dist})"):
            try:
                entry.load()
            except Exception as err:
                _broken_entry_points.append(
                    f"plugin entry point '{entry.name}' ({entry.value}, package {dist}) failed to import, "
                    f"its passes are missing: {type(err).__name__}: {err}")


def _import_the_passes_package() -> None:
    """`graphconv.passes`: the top-level `passes/` folder, installed under that name. Where
    graphconv itself is imported from a source tree (Python started in a checkout, which
    puts its `graphconv/` folder first on the path, or a clone on PYTHONPATH), the folder
    beside it is that package: an installed copy elsewhere was not found ("No module
    named 'graphconv.passes'", a traceback, after the quick start's `pip install .`), or
    was another checkout's passes, silently."""
    package = Path(__file__).resolve().parent
    beside = package.parent / "passes"
    if "graphconv.passes" in sys.modules or (package / "passes").is_dir() or not (beside / "__init__.py").is_file():
        importlib.import_module("graphconv.passes")
        return
    spec = importlib.util.spec_from_file_location("graphconv.passes", beside / "__init__.py",
                                                  submodule_search_locations=[str(beside)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["graphconv.passes"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["graphconv.passes"]
        raise


def broken_entry_points() -> list[str]:
    """Why each installed plugin whose entry point failed to import is missing (empty if none)."""
    load_builtin_passes()
    return list(_broken_entry_points)


# the ops each --plugin registered (op name -> the plugin: a module's name, a file's absolute
# path): a model compiled with them records the plugins it needs (`plugins_of_ops`), for a
# later command's unknown op to name, from whichever folder it runs
PLUGIN_OPS: dict[str, str] = {}


def load_plugin(spec: str) -> None:
    """Import a file (`path/to/passes.py`) or a module (`my.passes`) that registers passes
    (and ops of its own: noted in PLUGIN_OPS)."""
    from graphconv.ops.registry import all_ops

    load_builtin_passes()
    is_file = spec.endswith(".py") or "/" in spec or Path(spec).is_file()
    label = f"plugin {spec}"
    ops_before = {op.name for op in all_ops()}
    with _origin(label), _noting_new_ops(ops_before, str(Path(spec).resolve()) if is_file else spec):
        try:
            if is_file:
                path = Path(spec)
                if path.is_dir():
                    raise GraphconvError("a plugin is a .py file or an importable module's name, not a folder: "
                                         "give the file, or the package's name from the folder above it", file=spec)
                if not path.is_file():
                    raise GraphconvError("plugin file not found", file=spec)
                # named after the file's path, not its name alone: two folders' my_passes.py are two
                # modules, whose passes of one name clash, rather than one replacing the other's
                digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
                module_name = f"graphconv_plugin_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}_{digest}"
                module_spec = importlib.util.spec_from_file_location(module_name, path)
                module = importlib.util.module_from_spec(module_spec)
                sys.modules[module_name] = module
                with _importable_from(str(path.resolve().parent)):  # as `python file.py`: its packages beside it
                    module_spec.loader.exec_module(module)
            else:
                with _importable_from(os.getcwd()):
                    importlib.import_module(spec)
        except GraphconvError:
            raise
        except Exception as err:
            raise PassError(f"plugin '{spec}' failed to import: {type(err).__name__}: {err}") from err
        except SystemExit as err:  # exit 0 with nothing written and nothing said, the command never run
            raise PassError(f"plugin '{spec}' called sys.exit({err.code!r}) as it was imported: a plugin registers "
                            "passes and ops, and the command runs them") from None


@contextlib.contextmanager
def _noting_new_ops(ops_before: set[str], spec: str) -> Iterator[None]:
    try:
        yield
    finally:
        from graphconv.ops.registry import all_ops
        PLUGIN_OPS.update({op.name: spec for op in all_ops() if op.name not in ops_before})


def plugins_of_ops(graph: Graph) -> list[str]:
    """The plugins that registered ops `graph` uses, in the order loaded: each --plugin (a
    file by its absolute path), and the module of an op a script imported itself (which no
    --plugin loaded; not one defined in `__main__`, which no other process can import)."""
    from graphconv.ops.registry import get_op

    used = {node.op for node in graph.layers()}
    loaded = [spec for op, spec in PLUGIN_OPS.items() if op in used]
    imported = [get_op(op).package for op in sorted(used - set(PLUGIN_OPS))]
    imported = [package for package in imported if package.partition(".")[0] not in ("graphconv", "__main__")]
    return list(dict.fromkeys(loaded + imported))


@contextlib.contextmanager
def _importable_from(folder: str) -> Iterator[None]:
    """Imports find modules in `folder` while a plugin loads: a module named by --plugin
    imports from the working folder, as under `python -m graphconv` (whose sys.path
    starts with it; the `graphconv` script's starts with its own folder instead, and
    found no module beside the user), and a plugin file's `import my_ops.shrink` finds
    the package beside it, as `python plugin.py` would."""
    added = folder not in sys.path and not (folder == os.getcwd() and "" in sys.path)
    if added:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)


def registered_passes() -> list[PassInfo]:
    """Every pass a pipeline can name, graphconv's and those registered (`register_pass`,
    plugins), by name: each with its description, origin, and what it requires and
    provides."""
    load_builtin_passes()
    return sorted(_REGISTRY.values(), key=lambda p: p.name)


def get_pass(name: str) -> PassInfo:
    load_builtin_passes()
    name = RENAMED.get(name, name)
    if name not in _REGISTRY:
        broken = "".join(f"; {why}" for why in _broken_entry_points)
        close = nearest(name, sorted(_REGISTRY), n=1)
        meant = f": did you mean '{close[0]}'?" if close else ""
        raise PassError(f"unknown pass '{name}'{meant} (registered: {', '.join(sorted(_REGISTRY))}) (a pass of your "
                        f"own? load it with --plugin FILE_OR_MODULE; from Python, graphconv.load_plugin){broken}")
    return _REGISTRY[name]


# ---- pipelines ----------------------------------------------------------------------------

PipelineItem = tuple[str, dict[str, Any]]


def parse_pipeline(text: str) -> list[PipelineItem]:
    """`a,b{k=1,m=x},c` -> [("a", {}), ("b", {"k": 1, "m": "x"}), ("c", {})]."""
    items: list[PipelineItem] = []
    for match in re.finditer(r"\s*([^,{}\s]+)\s*(?:\{([^}]*)\})?\s*(?:,|$)", text):
        if not match.group(0):
            continue
        name, option_text = match.group(1), match.group(2)
        options = {}
        for part in filter(None, (p.strip() for p in _split_top_level(option_text or "", name))):
            key, sep, value = part.partition("=")
            if not sep:
                raise PassError(f"pass option '{part}' of '{name}' must be key=value")
            key, value = key.strip(), value.strip()
            if key in options:  # the last one was taken, silently
                raise PassError(f"pass option '{key}' of '{name}' is given twice")
            options[key] = value if _is_text_option(name, key) else _parse_value(value)
        items.append((name, options))
    rebuilt = ",".join(n + ("{...}" if o else "") for n, o in items)
    if not items or re.sub(r"\{[^}]*\}", "{...}", re.sub(r"\s", "", text)) != rebuilt:
        raise PassError(f"cannot parse pipeline '{text}': expected 'pass-a,pass-b{{key=value}}'")
    return items


def pipeline_items(passes: "str | Sequence[str | PipelineItem]") -> list[PipelineItem]:
    """A pipeline as (name, options) pairs, from any form the API takes: a string as
    --passes takes it (`a,b{k=1}`), or a list of pass names, "name{option=value}"
    strings and (name, options) pairs. PassManager, run_passes and compile_model all
    read their pipelines here, so one spelling works everywhere, `default` included."""
    if isinstance(passes, str):
        return _with_default_expanded(parse_pipeline(passes))
    if isinstance(passes, (bytes, dict)) or not isinstance(passes, Sequence):
        raise PassError(f"a pipeline is a string like 'fc-to-conv,output-stride{{stride=2}}' or a list of pass "
                        f"names, 'name{{option=value}}' strings or (name, options) pairs, got {shown(passes)}")
    return _with_default_expanded([item for entry in passes for item in _pipeline_entry(entry)])


def _with_default_expanded(items: list[PipelineItem]) -> list[PipelineItem]:
    """Each `default` replaced by DEFAULT_PIPELINE's passes, where it stands: passes
    before it run first, passes after it last, and nothing is dropped or merged (a pass
    named twice runs twice), so the pipeline run is the text read left to right."""
    expanded: list[PipelineItem] = []
    for name, options in items:
        if name != DEFAULT_WORD:
            expanded.append((name, options))
        elif options:
            raise PassError(f"'{DEFAULT_WORD}' stands for the default passes ({','.join(DEFAULT_PIPELINE)}) and "
                            f"takes no options; give the pass you want options for after it")
        else:
            expanded.extend((default, {}) for default in DEFAULT_PIPELINE)
    return expanded


def _pipeline_entry(entry: Any) -> list[PipelineItem]:
    """One entry of a pipeline list: "name", "name{k=v}" (or "a,b") or (name, options)."""
    if isinstance(entry, str):
        return parse_pipeline(entry)
    if (isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str)
            and isinstance(entry[1], Mapping)):
        return [(entry[0], dict(entry[1]))]
    raise PassError(f"a pipeline entry is a pass name, a 'name{{option=value}}' string or a (name, options) pair, "
                    f"got {shown(entry)}")


def _split_top_level(text: str, name: str) -> list[str]:
    """`k=1,m=[1,2],x=y` -> ["k=1", "m=[1,2]", "x=y"]: commas inside [...] belong to a list."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise PassError(f"pass options of '{name}' have an unmatched ']': {shown(text)}")
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    if depth:
        raise PassError(f"pass options of '{name}' have an unmatched '[': {shown(text)}")
    parts.append(text[start:])
    return parts


def _is_text_option(name: str, key: str) -> bool:
    """Whether option `key` of registered pass `name` takes text: its value is kept as
    written (`layer=007` named layer '7', `1_1` '11', as numbers parsed and written back)."""
    try:
        info = get_pass(name)
    except PassError:  # unknown: refused, with the registered names, where the pipeline is checked
        return False
    return key in info.options and _option_kind(info.options[key], info.option_annotation(key)) == "str"


def _parse_value(text: str) -> Any:
    """An option value: true/false, an integer, a number, a list [a,b,...] of values, or
    else the text itself."""
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [_parse_value(item.strip()) for item in _split_top_level(inner, "a list")] if inner else []
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def format_option_value(value: Any) -> str:
    """An option value as a pipeline writes it: lists as [a,b], everything else as text."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_option_value(v) for v in value) + "]"
    return f"{value}"


def format_pipeline(items: Sequence[PipelineItem]) -> str:
    return ",".join(name + ("{" + ",".join(f"{k}={format_option_value(v)}" for k, v in opts.items()) + "}"
                            if opts else "")
                    for name, opts in items)


# ---- running ------------------------------------------------------------------------------

@dataclass
class PassRecord:
    name: str
    seconds: float
    modified: bool
    automatic: bool  # run to satisfy another pass's requirement


@dataclass
class PassManager:
    """Runs a pipeline over a copy of a graph, with requirements, verification and tracing.

    print_ir_before / print_ir_after: pass names (a set or list, or one name as a string),
    or "all"; the dumps go to `out`."""

    pipeline: Sequence[PipelineItem | str]
    verify_each: bool = True
    auto_requirements: bool = True
    print_ir_before: set[str] = field(default_factory=set)
    print_ir_after: set[str] = field(default_factory=set)
    out: TextIO | None = None
    records: list[PassRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.print_ir_before = _pass_names(self.print_ir_before, "print_ir_before")
        self.print_ir_after = _pass_names(self.print_ir_after, "print_ir_after")
        self.items = pipeline_items(self.pipeline)
        for name, options in self.items:
            _check_options(get_pass(name), options)
        # By each pass's own name: an old name the registry still takes (fuse-conv-relu)
        # printed nothing, as _print compares the name the pass runs under.
        self.print_ir_before, self.print_ir_after = ({name if name == "all" else get_pass(name).name for name in names}
                                                     for names in (self.print_ir_before, self.print_ir_after))
        for name in sorted((self.print_ir_before | self.print_ir_after) - {"all"}):
            self._check_runs(name)

    def _check_runs(self, name: str) -> None:
        """--print-ir-before/after of a pass the pipeline never runs printed nothing and
        exited 0: refuse it, naming the pipeline. A pass runs if it is listed, or if it
        provides an analysis a listed pass requires (shape-inference, run automatically)."""
        listed = [get_pass(item).name for item, _ in self.items]
        needed = {_provider_of(analysis, get_pass(item)).name for item in listed
                  for analysis in get_pass(item).requires} if self.auto_requirements else set()
        if name not in listed and name not in needed:
            raise PassError(f"--print-ir-before/after {name}: pass '{name}' is not in the pipeline "
                            f"({format_pipeline(self.items)}), so it would print nothing; add it to --passes or "
                            "print after a pass that runs")

    def run(self, graph: Graph) -> Graph:
        """Run every pass on a copy of `graph` and return it; `graph` itself is untouched,
        so a failing pipeline loses nothing."""
        self._given = graph
        graph = graph.copy()
        self.records = []  # this run's; a manager run twice does not list its passes twice
        self._valid: set[str] = set()
        self._annotation_keys: dict[str, set[str]] = {}  # analysis -> the annotations its provider wrote
        self._left_dead: dict[str, str] = {}  # a layer a plugin pass left reaching no output -> that pass
        self._first_cell = None
        if self.verify_each:
            self._verify(graph, None)
        self._first_cell = _first_cell(graph)  # what the output's cells read, for the checks after the passes
        self._first_output = graph.output.name
        for name, options in self.items:
            self._run_one(graph, get_pass(name), options, automatic=False)
        self._refuse_layers_left_dead(graph)
        if not self.verify_each:  # the result is checked all the same: a broken IR is not a model
            self._verify(graph, None, who="the passes left the IR invalid (drop --no-verify, or from Python "
                                          "verify_each=True, to find which pass)")
        return graph

    def _run_one(self, graph: Graph, info: PassInfo, options: dict, automatic: bool) -> None:
        """Run one pass: its required analyses first, then the pass, then the checks a
        plugin pass must pass (result, weights, dead layers) and the analyses it leaves
        valid; with verify_each, the IR is verified after every pass that changed it, and
        after every plugin pass (whose shapes, set by hand, may be wrong)."""
        self._run_requirements(graph, info)
        self._print("before", info.name, graph)
        version = graph.version
        plugin = not info.origin.startswith("built-in")
        weights_before = _weight_sums(graph) if plugin else None
        structure_before = _structure(graph) if plugin else None
        keys_before = _annotation_keys(graph) if info.provides else None
        start = time.perf_counter()
        result = self._call(graph, info, options)
        changed = graph.version != version or (plugin and _structure(graph) != structure_before)
        modified = _checked_result(info, result, changed)
        self.records.append(PassRecord(info.name, time.perf_counter() - start, modified, automatic))
        if plugin:
            _refuse_weights_written_in_place(graph, weights_before, info, self._given)
            self._note_layers_left_dead(graph, info)
        self._update_analyses(graph, info, modified, keys_before)
        if (modified or plugin) and self.verify_each:  # a plugin's set_shape changes no version: checked all the same
            try:
                self._verify(graph, info.name)
            except PassError:  # the IR the check refused is what --print-ir-after was asked for
                with contextlib.suppress(Exception):  # a cycle cannot be printed in order
                    self._print("after", info.name, graph)
                raise
        self._print("after", info.name, graph)

    def _run_requirements(self, graph: Graph, info: PassInfo) -> None:
        """Run the providers of the analyses `info` requires that are not valid now
        (shape-inference, most often), or refuse where that cannot be done automatically."""
        for analysis in info.requires:
            if analysis in self._valid:
                continue
            provider = _provider_of(analysis, info)
            if not self.auto_requirements:
                raise PassError(f"pass '{info.name}' requires '{analysis}'; run '{provider.name}' before it")
            if provider.required_options:
                raise PassError(f"pass '{info.name}' requires '{analysis}', which pass '{provider.name}' "
                                f"provides, but it needs "
                                f"{agreeing(len(provider.required_options), 'option', 'options')} "
                                f"{', '.join(provider.required_options)}: "
                                f"list {provider.name}{{{provider.required_options[0]}=...}} before "
                                f"'{info.name}'")
            self._run_one(graph, provider, {}, automatic=True)

    def _call(self, graph: Graph, info: PassInfo, options: dict):
        """The pass's own run, its failures said as a PassError naming the pass (and, for a
        plugin, where in its file it crashed); a built-in pass's crash is a bug, raised as is
        unless the IR it was given is invalid."""
        try:
            return info.run(graph, **options)
        except GraphconvError as err:
            where = "" if info.origin.startswith("built-in") else where_it_crashed(err) or f", {info.origin}"
            unchecked = "" if self.verify_each else ("; an earlier pass, unchecked, may have made this: drop "
                                                     "--no-verify (verify_each=True) to find which")
            raise PassError(f"{err.message} (in pass '{info.name}'{where}{unchecked})", loc=err.loc,
                            layer=err.layer) from err
        except Exception as err:
            if info.origin.startswith("built-in"):
                if not self.verify_each:  # most likely an earlier pass broke the IR, unchecked: say so if it did
                    self._verify(graph, None, who=f"pass '{info.name}' crashed on an invalid IR (drop "
                                                  "--no-verify, or from Python verify_each=True, to find which pass "
                                                  "broke it)")
                raise
            raise PassError(f"pass '{info.name}' ({info.origin}) crashed{where_it_crashed(err)}: "
                            f"{type(err).__name__}: {err}{self._crash_hint(err, graph, info)}") from err
        except SystemExit as err:  # the command exited with nothing written and, for exit 0, nothing said
            raise PassError(f"pass '{info.name}' ({info.origin}) called sys.exit({err.code!r}){where_it_crashed(err)}"
                            ": a pass edits the graph and returns; to refuse a graph, raise GraphconvError") from None

    def _update_analyses(self, graph: Graph, info: PassInfo, modified: bool, keys_before: set[str] | None) -> None:
        """After a pass: the analyses it does not preserve are dropped with their annotations
        (and the shapes, read by later passes as current), the ones it provides are valid."""
        if modified:
            for analysis in self._valid - set(info.preserves):  # stale: their annotations go with them
                graph.forget_annotations(self._annotation_keys.pop(analysis, ()))
            self._valid &= set(info.preserves)
        for analysis in info.provides:
            self._annotation_keys[analysis] = _annotation_keys(graph) - keys_before
        self._valid |= set(info.provides)
        if modified and "shapes" not in self._valid:  # stale, they were printed and read by later passes as current
            graph.forget_shapes()

    def _note_layers_left_dead(self, graph: Graph, info: PassInfo) -> None:
        """Remember the layers a plugin pass leaves reaching no output: a later pass
        (dead-node-elimination) may erase them; any left at the end are that pass's."""
        with contextlib.suppress(Exception):  # a graph the check will refuse (a cycle) has no order
            for node in graph.dead_layers():
                self._left_dead.setdefault(node.name, f"pass '{info.name}' ({info.origin})")

    def _refuse_layers_left_dead(self, graph: Graph) -> None:
        if not self._left_dead:
            return
        try:
            dead = [node.name for node in graph.dead_layers() if node.name in self._left_dead]
        except Exception:  # a graph the final check refuses (a cycle): that error says more
            return
        if dead:
            raise PassError(f"{self._left_dead[dead[0]]} left {agreeing(len(dead), 'layer', 'layers')} "
                            f"{', '.join(repr(d) for d in dead[:3])} "
                            f"that {agreeing(len(dead), 'reaches', 'reach')} no output: erase them "
                            f"(graph.erase), or run dead-node-elimination after it")

    def _crash_hint(self, err: Exception, graph: Graph, info: PassInfo) -> str:
        """What a plugin pass's crash most likely means, where it is one of two slips: a
        write into a weight array (read-only: `set_weights` is the way), or reading
        `node.shape`, None until shape-inference runs, which runs before a pass only when
        it declares `requires=("shapes",)`."""
        if isinstance(err, ValueError) and ("read-only" in str(err) or "WRITEABLE" in str(err)):
            return (" (weight arrays are read-only, and stay so: give a layer new ones with "
                    "graph.set_weights(node, weight=...))")
        if "NoneType" not in str(err) or "shapes" in info.requires or "shapes" in self._valid:
            return ""
        if all(node.shape is not None for node in graph.layers()):
            return ""
        return (f" (node.shape is None until shape inference runs: if pass '{info.name}' reads shapes, "
                "declare @register_pass(..., requires=(\"shapes\",)))")

    def _verify(self, graph: Graph, pass_name: str | None, who: str | None = None) -> None:
        """The IR invariants: structure, shapes and weights, and annotated shapes that are
        still claimed valid must match a fresh inference. `who` says who broke it, where
        no one pass is known to have."""
        try:
            graph.verify()
            shapes = infer_shapes(graph)
            if "shapes" in self._valid:
                for node in graph.nodes():
                    if node.shape != shapes[node.name]:
                        raise node.error(f"annotated shape {node.shape} but its inputs give "
                                         f"{shapes[node.name]}{_shape_hint(node, pass_name)}")
            if self._first_cell is not None:
                _check_cells_unchanged(graph, self._first_cell, self._first_output)
            _check_labels_match(graph, shapes[graph.output.name][0])
        except GraphconvError as err:
            who = who or (f"pass '{pass_name}'{_plugin_origin(pass_name)} broke the IR" if pass_name
                          else "the input IR is invalid")
            raise PassError(f"{who}: {err}") from None

    def _print(self, when: str, name: str, graph: Graph) -> None:
        wanted = self.print_ir_before if when == "before" else self.print_ir_after
        if "all" in wanted or name in wanted:
            stream = self.out or sys.stdout
            print(f"// ----- IR {when} {name} -----\n{graph}", file=stream)

    def timings_table(self) -> str:
        return timings_table(self.records)


def _pass_names(names: Any, option: str) -> set[str]:
    """A set of pass names from what a caller gives: one name as a string, or any
    collection of names (None: none)."""
    if names is None:
        return set()
    if isinstance(names, str):
        return {names}
    given = names
    try:
        names = set(names)
    except TypeError:
        names = {None}
    if not all(isinstance(name, str) for name in names):
        raise PassError(f"{option}: pass names (a string, or a set or list of them) or 'all', got {shown(given)}")
    return names


def timings_table(records: Sequence[PassRecord]) -> str:
    """What `--timings` prints: each pass run, its time, share, and whether it changed the graph."""
    from graphconv.text_table import text_table

    total = sum(r.seconds for r in records) or 1e-12
    rows = [[r.name + (" (auto)" if r.automatic else ""), f"{r.seconds * 1e3:.2f}", f"{r.seconds / total:.0%}",
             "yes" if r.modified else "no"] for r in records]
    rows.append(["total", f"{total * 1e3:.2f}"])
    return "\n".join(text_table(["pass", "ms", "share", "changed"], rows, left=1))


def _first_cell(graph: Graph):
    """Output cell (0, 0) and its lattice (`receptive.FirstCell`), or None where there is
    none to keep (a graph whose fields cannot be worked out, such as maps of different
    strides meeting: `Model` refuses those itself)."""
    from graphconv.receptive import first_output_cell
    try:
        return first_output_cell(graph)
    except GraphconvError:
        return None


def _check_cells_unchanged(graph: Graph, before, output_before: str) -> None:
    """Every output cell must go on reading the pixels of its crop it read before the
    pipeline (for a classifier, cell (0, 0) is the classifier on the crop itself), and
    nothing outside the crop that it did not read before. The stride may become finer by
    a whole factor (output-stride), or coarser up to the period the network slides at
    (keep-crop-cells: cells between are no crop's); in all, it divides the period. A cell
    may come to read more of its own crop: conv-to-fc gives an fc layer the whole map
    where its conv's windows left the last rows out (its weights there are zero). A pass
    that makes a map finer by dropping a pooling's stride, say, changes what each cell
    computes, and every cell would be wrong; caught here, it is named."""
    after = _first_cell(graph)
    if after is None:
        raise graph.output.error("the receptive field of the output can no longer be worked out")
    _, height, width = graph.input_shape
    was, now = before.pixels_at(height, width), after.pixels_at(height, width)
    keeps_its_pixels = now[0] <= was[0] and now[1] <= was[1] and now[2] >= was[2] and now[3] >= was[3]
    old, new = before.box, after.box
    reach = (min(old[0], 0), min(old[1], 0), max(old[2], height), max(old[3], width))
    stays_in_reach = new[0] >= reach[0] and new[1] >= reach[1] and new[2] <= reach[2] and new[3] <= reach[3]
    on_its_lattice = all(Fraction(p) % Fraction(s) == 0 for s, p in zip(after.stride, before.period))
    if not (keeps_its_pixels and stays_in_reach and on_its_lattice):
        moved = "" if graph.output.name == output_before else (
            f" (the output is layer {graph.output.name!r} now, {output_before!r} when the passes began: removing the "
            "output layer makes its input the output)")
        raise graph.output.error(
            f"the first output cell{moved} read {_cell_box(before, height, width)}, and now reads "
            f"{_cell_box(after, height, width)}: a pass must keep every cell equal to what it was (a "
            "classifier's: the classifier on its crop); only the stride may change: finer by a whole factor, "
            "as output-stride makes it (compile --output-stride), or coarser up to the period the network "
            "slides at, as keep-crop-cells makes it")


def _cell_box(cell, height: int, width: int) -> str:
    top, left, bottom, right = cell.box
    return (f"rows {top} to {bottom - 1}, columns {left} to {right - 1} of the {height}x{width} crop at stride "
            f"{cell.stride[0]}x{cell.stride[1]}")


def _check_labels_match(graph: Graph, classes: int) -> None:
    """The class names must go on naming the output's channels: a pass that changes the
    classes (keeps some, adds one) must set `graph.meta["labels"]` to match."""
    labels = graph.meta.get("labels")
    if labels is not None and len(labels) != classes:
        raise graph.output.error(f"the output has {classes} channels and graph.meta['labels'] names "
                                 f"{len(labels)} classes: a pass that changes the classes must set the labels "
                                 "to match")


def _shape_hint(node, pass_name: str | None) -> str:
    """Why a layer a pass made can lack its shape: `add`, `replace` and `insert_after`
    make layers without one, and a pass that declares it preserves shapes must set them."""
    if node.shape is None and pass_name is not None:
        return (f"; pass '{pass_name}' declares it preserves shapes, so each layer it adds or replaces "
                "needs one: call graph.set_shape(layer, shape), or drop 'shapes' from its preserves")
    return ""


def _provider_of(analysis: str, needed_by: PassInfo) -> PassInfo:
    for info in registered_passes():
        if analysis in info.provides:
            return info
    raise PassError(f"pass '{needed_by.name}' requires '{analysis}', which no registered pass provides")


def _check_options(info: PassInfo, options: dict) -> None:
    known = info.options
    for key, value in options.items():
        if key not in known:
            raise PassError(f"pass '{info.name}' has no option '{key}' (it takes: {describe_options(info)})")
        _check_option_type(info, key, value, known[key], info.option_annotation(key))
        if isinstance(value, numbers.Integral) and not isinstance(value, (bool, int)):
            options[key] = value = int(value)  # a numpy integer, as the pass's own int
        if _option_kind(known[key], info.option_annotation(key)) == "str" and not isinstance(value, (str, list)):
            text = format_option_value(value)
            options[key] = text.lower() if isinstance(value, bool) else text
        value = options[key]
        if isinstance(value, str) and (set(value) & set(",{}[]") or value != value.strip()):
            # the compiled model records its pipeline as text, which verify reads back
            raise PassError(f"option '{key}' of '{info.name}' is {value!r}: a pipeline's text cannot hold "
                            "',', '{', '}', '[', ']' or spaces at the ends of an option's text")
    missing = [k for k in info.required_options if k not in options]
    if missing:
        raise PassError(f"pass '{info.name}' needs {agreeing(len(missing), 'option', 'options')} "
                        f"{', '.join(missing)}: write {info.name}{{{missing[0]}=...}}")


def describe_options(info: PassInfo, separator: str = ", ") -> str:
    """"layer=(required), lo=0.0, hi=6.0": each option with its default, as `graphconv
    passes` lists them (a required option's default of None is no default), joined by
    `separator` (`graphconv passes` gives ","; a text default's own ", " stays as it is)."""
    required = set(info.required_options)
    return separator.join(f"{k}=" + ("(required)" if k in required else format_option_value(v))
                     for k, v in info.options.items()) or "no options"


OPTION_KINDS = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "text"}


def _check_option_type(info: PassInfo, key: str, value: Any, default: Any, annotation: str = "") -> None:
    """An option takes values of its kind: the kind of its default (bool, int, float,
    str, or a list of them), else of its annotation (`int`, `float`, `list[float]`,
    `str | None`, ...). An int is fine where a float is expected; an option with neither
    takes any value; a text option takes any single value as text (`layer=5` is "5"). A
    pass never sees `max_elements='abc'`."""
    kind = _option_kind(default, annotation)
    if kind is None or _fits_kind(value, kind):
        return
    element = kind[1] if isinstance(kind, tuple) else None
    plural = {"bool": "true or false values", "int": "integers", "float": "numbers", "str": "texts"}
    wanted = (f"a list of {plural[element]}, like [1,2]" if element
              else "a list, like [1,2]" if kind == "list" else OPTION_KINDS[kind])
    raise PassError(f"option '{key}' of pass '{info.name}' must be {wanted}, got {shown(value)}")


def _option_kind(default: Any, annotation: str):
    """"bool", "int", "float", "str", "list", ("list", element kind), or None (anything)."""
    if default is not None:
        if isinstance(default, (list, tuple)):
            kinds = {_option_kind(v, "") for v in default}
            if kinds and kinds <= {"int", "float"}:
                return ("list", "float" if "float" in kinds else "int")
            if len(kinds) == 1 and kinds <= {"bool", "str"}:
                return ("list", kinds.pop())
            return "list"
        return {bool: "bool", int: "int", float: "float", str: "str"}.get(type(default))
    text = annotation.replace(" ", "")
    optional = re.fullmatch(r"Optional\[(.*)\]", text)
    text = "|".join(part for part in (optional.group(1) if optional else text).split("|") if part != "None")
    if text in OPTION_KINDS:
        return text
    for prefix in ("list[", "tuple[", "Sequence[", "List[", "Tuple["):
        if text.startswith(prefix) and text.endswith("]"):
            inner = text[len(prefix):-1].split(",")[0]
            return ("list", inner) if inner in OPTION_KINDS else "list"
    return None


def _fits_kind(value: Any, kind) -> bool:
    if isinstance(kind, tuple) or kind == "list":
        return isinstance(value, list) and (kind == "list" or all(_fits_kind(v, kind[1]) for v in value))
    if kind == "str":
        return not isinstance(value, list)
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "float":  # NaN and infinity are no setting (1e400 reads as infinity)
        return isinstance(value, numbers.Real) and math.isfinite(value)
    return isinstance(value, numbers.Integral)  # np.int64 from Python too


def _annotation_text(annotation: Any) -> str:
    """An option's annotation as the text `_option_kind` reads: "list[float]" for
    list[float] (whose __name__ is "list") and "Optional[int]" for typing's (whose
    __name__ is "Optional"), as a plugin without `from __future__ import annotations`
    gives them; with it they are text already, "typing." left in where written."""
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return re.sub(r"\btyping\.", "", annotation if isinstance(annotation, str) else str(annotation))


def _excludes_none(annotation: str) -> bool:
    """Whether an annotation rules None out: it names a type and not None, Optional or Any."""
    return bool(annotation) and not any(word in annotation for word in ("None", "Optional", "Any"))


def run_passes(source, pipeline: str | Sequence[PipelineItem | str] = DEFAULT_PIPELINE,
               **manager_options: Any):
    """Convenience: run a pipeline over `source` and return the transformed copy: a
    Graph for a Graph (or a path, read as `graphconv.load_spec` reads it), a Model for a
    Model. `source` itself is never changed."""
    from graphconv.model import Model, load_graph

    manager = PassManager(pipeline, **manager_options)
    if isinstance(source, Model):
        return Model(manager.run(source.graph))
    if isinstance(source, Graph):
        return manager.run(source)
    return manager.run(load_graph(source))
