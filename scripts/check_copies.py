"""Check that code copied on purpose still matches its source (after diffusers' `make fix-copies`).

The task pipelines in `ldm_core/pipelines/` are standalone siblings, so some code is copied
between them. Every copy carries a note naming its source; this script finds the notes in
`ldm_core/` and `tabs/`, compares each copy with its source and lists the copies that drifted.

Notes
-----
A copied function, method or class: one line right above it (above its decorators, if any)::

    # Copied from ldm_core.pipelines.text2img.Text2ImgPipeline.__init__

A copied block inside a function: the source marks the block and names it, ::

    # Block: decode
    ...
    # End block

and each copy sits between a note naming the function and the block, and an end line::

    # Copied from ldm_core.pipelines.text2img.Text2ImgPipeline.__call__: decode
    ...
    # End copy

Either kind of note may end in replacement patterns, applied in order to the source before
the comparison: `# Copied from a.b.C.f with Text2Img->Img2Img, text2img->img2img` (each
`old->new` is a plain text replacement; neither side holds a space or a comma).

The source is a dotted path: its longest prefix that is a module file under the repository
root (`a/b.py` or `a/b/__init__.py`), then the qualified name in that module. What is compared:
the source's lines (a definition from its first decorator to its last line, or the lines between
`# Block:` and `# End block`), re-indented to the copy's indentation and with the patterns
applied, against the copy's lines (trailing white space ignored). The note lines themselves
(`# Copied from`, `# End copy`, `# Block:`, `# End block`) lie outside what is compared.

Usage
-----
    python scripts/check_copies.py             # exit 0 and a summary line: every copy matches;
                                               # exit 1: each drifted copy (file:line, source, diff)
                                               # and each note whose source cannot be found
    python scripts/check_copies.py --fix       # rewrite the drifted copies from their sources
    python scripts/check_copies.py --root DIR  # check another tree (the tests do)
"""
from __future__ import annotations

import argparse
import ast
import difflib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("ldm_core", "tabs")
NOTE = re.compile(r"^(?P<indent>[ \t]*)# Copied from (?P<source>[\w.]+)(?::[ \t]*(?P<block>[\w-]+))?"
                  r"(?:[ \t]+with[ \t]+(?P<patterns>.+?))?[ \t]*$")
ANY_NOTE = re.compile(r"^[ \t]*# Copied from\b")   # a line meant as a note, well formed or not
BLOCK = re.compile(r"^(?P<indent>[ \t]*)# Block: (?P<name>[\w-]+)[ \t]*$")
END_COPY = "# End copy"
END_BLOCK = "# End block"
PATTERN = re.compile(r"^([^\s,]+)->([^\s,]*)$")
DIFF_LINES = 24      # a drift's diff is cut to this many lines
MAX_FIX_PASSES = 10  # --fix repeats while copies of copies change


class NoteError(Exception):
    """A note that cannot be checked: malformed, misplaced, or naming no source."""


@dataclass
class Copy:
    path: Path
    line: int                  # the note's line, 1-based
    source: str                # the dotted source, as written
    block: str | None          # the named block, for a block copy
    patterns: list[tuple[str, str]]
    start: int                 # the copied lines: lines[start:end] of the file, 0-based
    end: int
    indent: str

    @property
    def label(self) -> str:
        return self.source + (f": {self.block}" if self.block else "")


@dataclass
class Report:
    copies: list[Copy] = field(default_factory=list)
    drifted: list[tuple[Copy, str]] = field(default_factory=list)   # (copy, unified diff)
    errors: list[str] = field(default_factory=list)                 # "file:line: what is wrong"
    fixed: list[str] = field(default_factory=list)                  # "file:line" rewritten by --fix

    @property
    def ok(self) -> bool:
        return not self.drifted and not self.errors


def parse_patterns(text: str | None) -> list[tuple[str, str]]:
    if not text:
        return []
    pairs = []
    for part in text.split(","):
        m = PATTERN.match(part.strip())
        if not m:
            raise NoteError(f"replacement pattern {part.strip()!r} is not old->new")
        pairs.append((m.group(1), m.group(2)))
    return pairs


def definitions(tree: ast.AST) -> dict[int, ast.AST]:
    """Each function or class of a module by its first line (its first decorator's, if any)."""
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return {min([n.lineno, *(d.lineno for d in n.decorator_list)]): n for n in ast.walk(tree) if isinstance(n, kinds)}


def closing_line(lines: list[str], opening: int, stop: int, indent: str, end: str) -> int:
    """The index of the first `end` line at `indent` after lines[opening], before lines[stop]."""
    for i in range(opening + 1, stop):
        if lines[i].rstrip() == indent + end:
            return i
    raise NoteError(f"no '{end}' at this indentation closes the block opened at line {opening + 1}")


def find_copies(root: Path) -> tuple[list[Copy], list[str]]:
    """Every copy note under the scanned folders of `root`, and the notes in error."""
    copies = []
    errors = []
    files = sorted(p for d in SCANNED if (root / d).is_dir() for p in (root / d).rglob("*.py"))
    for path in files:
        lines = path.read_text().splitlines()
        notes = [(i, NOTE.match(line)) for i, line in enumerate(lines) if ANY_NOTE.match(line)]
        if not notes:
            continue
        try:
            defs = definitions(ast.parse("\n".join(lines)))
        except SyntaxError as e:
            errors.append(f"{path.relative_to(root)}:{e.lineno}: cannot parse the file: {e.msg}")
            continue
        for i, m in notes:
            where = f"{path.relative_to(root)}:{i + 1}"
            try:
                if m is None:
                    raise NoteError("malformed note: '# Copied from a.b.C.f[: block][ with old->new, ...]'")
                patterns = parse_patterns(m.group("patterns"))
                if m.group("block"):
                    start, end = i + 1, closing_line(lines, i, len(lines), m.group("indent"), END_COPY)
                elif i + 2 in defs:
                    start, end = i + 1, defs[i + 2].end_lineno
                else:
                    raise NoteError("the note is not right above a def or class (a block note names its block: "
                                    "'# Copied from a.b.C.f: name')")
            except NoteError as e:
                errors.append(f"{where}: {e}")
                continue
            copies.append(Copy(path, i + 1, m.group("source"), m.group("block"), patterns, start, end,
                               m.group("indent")))
    return copies, errors


def resolve(root: Path, dotted: str) -> tuple[Path, list[str]]:
    """The module file a dotted source lies in, and the qualified name inside it."""
    parts = dotted.split(".")
    for k in range(len(parts) - 1, 0, -1):
        base = root.joinpath(*parts[:k])
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return path, parts[k:]
    raise NoteError(f"source {dotted} not found: no module file for it under {root}")


def source_lines(root: Path, copy: Copy) -> tuple[list[str], str]:
    """The source's lines and their indentation."""
    path, qualname = resolve(root, copy.source)
    lines = path.read_text().splitlines()
    try:
        body = ast.parse("\n".join(lines)).body
    except SyntaxError as e:
        raise NoteError(f"source {copy.source}: cannot parse {path.relative_to(root)}: {e.msg}") from None
    node = None
    for name in qualname:
        node = next((n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and n.name == name), None)
        if node is None:
            raise NoteError(f"source {copy.source} not found: no {name} in {path.relative_to(root)}")
        body = node.body
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
    if not copy.block:
        return lines[first:node.end_lineno], re.match(r"[ \t]*", lines[first]).group()
    opening = [(i, m) for i in range(first, node.end_lineno)
               if (m := BLOCK.match(lines[i])) and m.group("name") == copy.block]
    if not opening:
        raise NoteError(f"source {copy.label} not found: no '# Block: {copy.block}' in {copy.source}")
    i, m = opening[0]
    return lines[i + 1:closing_line(lines, i, node.end_lineno, m.group("indent"), END_BLOCK)], m.group("indent")


def expected_lines(root: Path, copy: Copy) -> list[str]:
    """What the copy should read: its source with the patterns applied, at the copy's indentation."""
    lines, indent = source_lines(root, copy)
    text = "\n".join(lines)
    for old, new in copy.patterns:
        text = text.replace(old, new)
    out = []
    for line in text.split("\n"):
        if line.startswith(indent):
            line = copy.indent + line[len(indent):]
        out.append(line.rstrip() if line.strip() else "")
    return out


def check(root: Path = ROOT) -> Report:
    copies, errors = find_copies(root)
    report = Report(copies=copies, errors=errors)
    for copy in copies:
        try:
            want = expected_lines(root, copy)
        except NoteError as e:
            report.errors.append(f"{copy.path.relative_to(root)}:{copy.line}: {e}")
            continue
        have = [line.rstrip() for line in copy.path.read_text().splitlines()[copy.start:copy.end]]
        if have != want:
            where = f"{copy.path.relative_to(root)}:{copy.line}"
            diff = list(difflib.unified_diff(want, have, f"source {copy.label}", f"copy {where}", n=1, lineterm=""))
            if len(diff) > DIFF_LINES:
                diff = diff[:DIFF_LINES] + [f"... ({len(diff) - DIFF_LINES} more diff lines)"]
            report.drifted.append((copy, "\n".join(diff)))
    return report


def fix(root: Path = ROOT) -> Report:
    """Rewrite drifted copies from their sources until none drifts (copies of copies settle in
    a few passes); the report of the last check, with what was rewritten."""
    fixed = []
    for _ in range(MAX_FIX_PASSES):
        report = check(root)
        if not report.drifted:
            break
        by_file: dict[Path, list[Copy]] = {}
        for copy, _diff in report.drifted:
            by_file.setdefault(copy.path, []).append(copy)
        for path, drifted in by_file.items():
            text = path.read_text()
            lines = text.splitlines()
            for copy in sorted(drifted, key=lambda c: c.start, reverse=True):   # bottom up: line numbers hold
                lines[copy.start:copy.end] = expected_lines(root, copy)
                fixed.append(f"{path.relative_to(root)}:{copy.line}")
            path.write_text("\n".join(lines) + ("\n" if text.endswith("\n") else ""))
    report.fixed = list(dict.fromkeys(fixed))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--fix", action="store_true", help="rewrite drifted copies from their sources")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository root (default: this one)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    report = fix(root) if args.fix else check(root)
    for where in report.fixed:
        print(f"{where}: rewritten from its source")
    for copy, diff in report.drifted:
        print(f"{copy.path.relative_to(root)}:{copy.line}: copy of {copy.label} has drifted\n{diff}\n")
    for error in report.errors:
        print(error)
    files = len({c.path for c in report.copies})
    if report.ok:
        print(f"check_copies: all {len(report.copies)} copies match their sources ({files} files)")
        return 0
    print(f"check_copies: {len(report.drifted)} of {len(report.copies)} copies drifted, {len(report.errors)} notes "
          f"in error" + ("; `python scripts/check_copies.py --fix` rewrites drifted copies" if report.drifted else ""))
    return 1


if __name__ == "__main__":
    sys.exit(main())
