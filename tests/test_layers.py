"""The request path runs one way (issue 24): the import graph of ldm_core/, tabs/, server/ and
webui.py, read from the source with `ast`, has no cycle and no import from a lower layer to a
higher one (the layers: docs/layers.toml); no function-local import remains but lazy optional
third-party ones, each with a comment; and no tab reaches past the service."""
import ast
import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ldm_core", "tabs", "server")


def modules() -> dict[str, Path]:
    found = {"webui": ROOT / "webui.py"}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _target(name: str, node, known: dict) -> list[str]:
    """The project modules one import statement of module `name` binds (the module itself, or a
    submodule imported by name)."""
    if isinstance(node, ast.Import):
        heads = [a.name for a in node.names]
    else:
        package = name if known[name].name == "__init__.py" else name.rpartition(".")[0]
        base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
        base = ".".join(base + ([node.module] if node.module else []))
        heads = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    out = []
    for head in heads:
        while head and head not in known:
            head = head.rpartition(".")[0]
        if head and head != name:
            out.append(head)
    return out


def imports() -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    """{module: the project modules it imports}, and every function-local import (module, line, text)."""
    known, graph, local = modules(), {}, []
    for name, path in known.items():
        text = path.read_text()
        tree = ast.parse(text)
        graph[name] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[name].update(_target(name, node, known))
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        lines = text.splitlines()[node.lineno - 1:node.end_lineno]
                        above = text.splitlines()[node.lineno - 2].strip()
                        why = above if above.startswith("#") else ""     # a comment may sit on the line above
                        local.append((name, node.lineno, " ".join(lines) + why))
    return graph, local


def layer_of(name: str, layers: list[dict]) -> int:
    best = None
    for i, layer in enumerate(layers):
        for pattern in layer["modules"]:
            if fnmatch.fnmatchcase(name, pattern):
                rank = (pattern == name, len(pattern))
                if best is None or rank > best[0]:
                    best = (rank, i)
    assert best is not None, f"{name} is in no layer of docs/layers.toml"
    return best[1]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


LAYERS = tomllib.loads((ROOT / "docs" / "layers.toml").read_text())["layer"]


def test_no_import_cycle():
    assert cycles(imports()[0]) == []


def test_no_import_climbs_to_a_higher_layer():
    graph = imports()[0]
    upward = [f"{a} ({LAYERS[layer_of(a, LAYERS)]['name']}) imports {b} ({LAYERS[layer_of(b, LAYERS)]['name']})"
              for a, targets in graph.items() for b in targets if layer_of(b, LAYERS) < layer_of(a, LAYERS)]
    assert upward == []


def test_function_local_imports_are_only_lazy_third_party_ones_and_say_why():
    graph_modules = modules()
    bad = []
    for name, line, text in imports()[1]:
        target = text.split("#")[0].split()[1]
        project = target.startswith(".") or target.split(".")[0] in {*PACKAGES, "webui"}
        if project or "#" not in text:
            bad.append(f"{graph_modules[name].relative_to(ROOT)}:{line}: {text.strip()}")
    assert bad == [], "hoist these to the top of their module, or comment why they are lazy"


def test_no_tab_reaches_past_the_service():
    graph = imports()[0]
    offenders = {m: sorted(t & {"ldm_core.stack", "ldm_core.validation", "ldm_core.loading"})
                 for m, t in graph.items() if m.startswith("tabs")}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_the_checks_catch_what_they_look_for():
    """A cycle and an upward import, planted in a copy of the graph, are found."""
    graph = {k: set(v) for k, v in imports()[0].items()}
    graph["ldm_core.requests"].add("ldm_core.stack")
    assert cycles(graph)
    assert layer_of("ldm_core.stack", LAYERS) < layer_of("ldm_core.requests", LAYERS)
    assert layer_of("tabs.text2img", LAYERS) < layer_of("tabs.common", LAYERS) < layer_of("server.security", LAYERS)
