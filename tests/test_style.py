"""The renovation's size rules hold (issue 15): no file in ldm_core/ or tabs/ over 300 lines, no
function there over 60; each task is a module that the stack, API, CLI and UI find by itself."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_FILE, MAX_FUNCTION = 300, 60


def _sources():
    return sorted(p for d in ("ldm_core", "tabs") for p in (ROOT / d).rglob("*.py"))


def test_no_file_over_300_lines_and_no_function_over_60():
    too_long = []
    for p in _sources():
        text = p.read_text()
        if text.count("\n") > MAX_FILE:
            too_long.append(f"{p.relative_to(ROOT)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION:
                    too_long.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name}(): {n} lines")
    assert not too_long, "\n".join(too_long)


def test_every_task_has_its_module_pipeline_tab_and_catalog_models():
    from ldm_core.catalog import Catalog
    from ldm_core.tasks import TASKS
    from tabs import task_tabs
    catalog = Catalog.load()
    tabs = task_tabs()
    for name, task in TASKS.items():
        assert (ROOT / "ldm_core" / "pipelines" / f"{name}.py").is_file(), name
        assert hasattr(tabs[name], "build"), name
        entries = catalog.for_task(name)
        assert entries and all(e.pipeline in task.pipelines for e in entries), name


def test_nothing_retypes_the_task_list():
    """Task names appear as a list only in the task modules: no ("text2img", "layout2img", ...) elsewhere."""
    offenders = [str(p.relative_to(ROOT)) for p in [*_sources(), ROOT / "webui.py"]
                 if '"text2img", "layout2img"' in p.read_text() or "'text2img', 'layout2img'" in p.read_text()]
    assert not offenders, offenders
