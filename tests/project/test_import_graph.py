"""Imports flow one way: the package's import graph has no cycle and no import against the layers.

The layers, lowest first (`LAYERS`); a package may import its own modules and the packages of
lower layers, never a package of its own layer or a higher one:

    errors                               the exceptions every layer raises
    nn                                   blocks: know shapes and logical axis names, nothing else
    models, quantization, parallel       families from blocks; weight rewriting; the mesh and its
                                         rules (a model names logical axes and never a mesh)
    data, presets                        corpora, tokenizers, pipelines; model presets as data
    interop                              HF checkpoints and tokenizers in and out
    finetune                             model rewrites: LoRA, soft prompts, quantized bases,
                                         adapters on disk, what trains
    generate, inference, cascade         using a model: decoding, encoder inference, cascades
    tasks                                a run's data, loss, metrics and report (reports decode)
    config                               the run config: every section's dataclass
    train                                state, step, loop, checkpoints, run directories, warm starts
    sources, compile                     a model from a run or HF directory; programs for a slice
    commands                             the `jaxformer` subcommands
    cli                                  the front door
    __main__, jaxformer/__init__         `python -m jaxformer`; the package's names

Where the order is not the obvious one: `finetune` is under `train` because a run applies the
fine-tuning rewrites when it builds its model (starting from a base's weights is a warm start,
in `train`); `generate` and `inference` are under `tasks` because a task's end-of-run report
decodes a sample or fills masks; loading a model from a run directory reads `train`'s run
directories, so `sources` is above it, and so are the commands that use it. Packages of one layer
do not import each other: `models` never imports `parallel`.

The graph holds every `import` statement of every module, at module level and inside functions
(an import inside a function is an edge like any other: the order holds for it too, and a cycle
through it is a cycle). Relative imports are resolved; `from p import x` is an import of module
`p.x` when that is a module, else of `p` (its `__init__`); importing `p.q.m` also imports the
packages `p.q` and `p`, so those are edges too, except packages that hold the importer (they are
already loading). Imports named by a string (`importlib.import_module`) are not read.

A module that moved up a layer may leave a deprecated re-export at its old path (`REEXPORTS`):
its import of the new module is exempt from the order, never from the cycle check.

Shown to fail: the `test_checker_*` tests write small packages to `tmp_path` (a cycle through a
function-level import, an upward import, a cycle through a package's `__init__`, an upward import
beside a declared re-export) and assert that `problems`, the same function that checks jaxformer,
reports each of them, in the words it uses for jaxformer.
"""

import ast
from pathlib import Path

import jaxformer

LAYERS = (
    ("errors",),
    ("nn",),
    ("models", "quantization", "parallel"),
    ("data", "presets"),
    ("interop",),
    ("finetune",),
    ("generate", "inference", "cascade"),
    ("tasks",),
    ("config",),
    ("train",),
    ("sources", "compile"),
    ("commands",),
    ("cli",),
    ("__main__", ""),  # "": the package's own __init__
)

# Old import paths kept for one release as thin re-exports of a module that moved up a layer:
# {shim: the module it re-exports}. Their import of that module is exempt from the order, not
# from the cycle check.
REEXPORTS = {"jaxformer.generate.source": "jaxformer.sources"}

# Imports that a change under way removes ({module: imported package}); they are left out of the
# graph until it lands, and an entry whose import is gone fails the test, so it gets deleted.
IN_FLIGHT: dict[str, str] = {}


def module_names(root: Path) -> dict[str, Path]:
    """{dotted module name: file} of the package in directory `root` (a package is its
    `__init__`)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _imported(name: str, node: ast.AST, modules: dict[str, Path]) -> list[str]:
    """The modules of this package that one import statement in module `name` names."""
    def known(dotted: str) -> str | None:  # the longest prefix that is a module
        parts = dotted.split(".")
        while parts and ".".join(parts) not in modules:
            parts.pop()
        return ".".join(parts) or None

    if isinstance(node, ast.Import):
        found = [known(alias.name) for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = name.split(".") if modules[name].name == "__init__.py" else name.split(".")[:-1]
            package = package[:len(package) - node.level + 1]
            base = ".".join(package + ([base] if base else []))
        found = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else known(base)
                 for alias in node.names]
    return [m for m in found if m is not None]


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    """{module: {imported module: line of the first import}} over the package in `root`."""
    modules = module_names(root)
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, {})
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _imported(name, node, modules):
                parts = target.split(".")
                for end in range(1, len(parts) + 1):
                    package = ".".join(parts[:end])
                    if package != name and not (name + ".").startswith(package + "."):
                        edges.setdefault(package, node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (a list of modules, first == last) through each strongly connected part."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    parts: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            part = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                part.append(member)
                if member == node:
                    break
            if len(part) > 1:
                parts.append(part)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    found = []
    for part in parts:
        members, start = set(part), min(part)
        paths = {start: [start]}  # breadth-first inside the part, back to the start
        frontier = [start]
        while frontier and start not in [t for n in frontier for t in graph[n]]:
            following = []
            for node in frontier:
                for target in sorted(graph[node]):
                    if target in members and target not in paths:
                        paths[target] = paths[node] + [target]
                        following.append(target)
            frontier = following
        last = next(n for n in frontier if start in graph[n])
        found.append(paths[last] + [start])
    return found


def layer_of(module: str, layers=LAYERS) -> int | None:
    """The rank of the layer holding `module`'s package (its first name under the root)."""
    package = module.split(".")[1] if "." in module else ""
    return next((rank for rank, names in enumerate(layers) if package in names), None)


def problems(root: Path, layers=LAYERS, reexports=REEXPORTS, in_flight=None) -> list[str]:
    """Every cycle and every import against `layers` in the package in `root`, as sentences
    (`reexports`, `in_flight`: as REEXPORTS and IN_FLIGHT)."""
    graph = import_graph(root)
    found = []
    for module, package in (in_flight or {}).items():
        dropped = [t for t in graph.get(module, {}) if (t + ".").startswith(package + ".")]
        if not dropped:
            found.append(f"{module} no longer imports {package}: delete it from IN_FLIGHT")
        for target in dropped:
            del graph[module][target]
    found += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    for module, edges in sorted(graph.items()):
        rank = layer_of(module, layers)
        if rank is None:
            found.append(f"{module} is in no layer: add its package to LAYERS")
            continue
        for target, line in sorted(edges.items()):
            target_rank = layer_of(target, layers)
            same_package = module.split(".")[:2] == target.split(".")[:2]
            shim = (reexports.get(module, "") + ".").startswith(target + ".")
            if not (same_package or shim) and target_rank is not None and target_rank >= rank:
                found.append(f"{module} (line {line}) imports {target}: layer {target_rank} "
                             f"{layers[target_rank]} is not below layer {rank} {layers[rank]}")
    return found


def test_jaxformer_imports_flow_one_way():
    assert problems(Path(jaxformer.__file__).parent, in_flight=IN_FLIGHT) == []


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_checker_reports_a_cycle(tmp_path):
    package = _write_package(tmp_path, {
        "__init__.py": "",
        "low/__init__.py": "from .a import f\n",
        "low/a.py": "from pkg.low import b\n\ndef f():\n    return b\n",
        "low/b.py": "def g():\n    from . import a  # inside a function: still an edge\n",
    })
    assert problems(package, layers=(("low",), ("",))) == [
        "import cycle: pkg.low.a -> pkg.low.b -> pkg.low.a"]


def test_checker_reports_a_layer_violation(tmp_path):
    package = _write_package(tmp_path, {
        "__init__.py": "",
        "low.py": "def f():\n    import pkg.high.api\n",
        "high/__init__.py": "",
        "high/api.py": "import json\n",
    })
    assert problems(package, layers=(("low",), ("high",), ("",))) == [
        "pkg.low (line 2) imports pkg.high: layer 1 ('high',) is not below layer 0 ('low',)",
        "pkg.low (line 2) imports pkg.high.api: layer 1 ('high',) is not below layer 0 ('low',)"]


def test_checker_exempts_only_a_declared_reexport(tmp_path):
    package = _write_package(tmp_path, {
        "__init__.py": "",
        "low/__init__.py": "",
        "low/old.py": "from pkg.high import new\n",
        "low/other.py": "from pkg.high import new\n",
        "high/__init__.py": "",
        "high/new.py": "import json\n",
    })
    assert problems(package, (("low",), ("high",), ("",)), {"pkg.low.old": "pkg.high.new"}) == [
        "pkg.low.other (line 1) imports pkg.high: layer 1 ('high',) is not below layer 0 ('low',)",
        "pkg.low.other (line 1) imports pkg.high.new: layer 1 ('high',) is not below layer 0 "
        "('low',)"]


def test_checker_drops_in_flight_imports_while_they_exist(tmp_path):
    package = _write_package(tmp_path, {
        "__init__.py": "",
        "low.py": "from pkg.high import api\n",
        "high/__init__.py": "",
        "high/api.py": "from pkg import low\n",
    })
    layers, in_flight = (("low",), ("high",), ("",)), {"pkg.low": "pkg.high"}
    assert problems(package, layers, in_flight=in_flight) == []
    (package / "low.py").write_text("import json\n")
    assert problems(package, layers, in_flight=in_flight) == [
        "pkg.low no longer imports pkg.high: delete it from IN_FLIGHT"]


def test_checker_sees_a_package_init_cycle(tmp_path):
    """Importing `p.q.m` runs `p/q/__init__.py` first: a cycle through it is a cycle."""
    package = _write_package(tmp_path, {
        "__init__.py": "",
        "app/__init__.py": "",
        "app/x/__init__.py": "",
        "app/x/a.py": "def f():\n    pass\n",
        "app/x/c.py": "from pkg.app.y import b\n",
        "app/y/__init__.py": "",
        "app/y/b.py": "from pkg.app.x.a import f\n",
    })
    layers = (("app",), ("",))
    assert problems(package, layers) == []
    (package / "app" / "x" / "__init__.py").write_text("from . import c\n")
    assert problems(package, layers) == [
        "import cycle: pkg.app.x -> pkg.app.x.c -> pkg.app.y.b -> pkg.app.x"]
