#!/usr/bin/env python3
"""Fails when the modules of a workspace crate import each other in a circle.

Cargo already refuses cycles between crates; inside a crate nothing does. This check reads
every `.rs` file under each member's `src/`, maps it to its top-level module (`db.rs`,
`db/admission.rs` and `db/mod.rs` are all `db`), and records an edge A -> B for every path
`crate::B...` (in `use` lines, groups `crate::{b, c::d}` and inline paths) and `super::B`
that leaves A. Names the root re-exports (`pub use error::Error`) count as an import of the
module they come from. Test modules (`#[cfg(test)]`) and comments are left out: a test may
reach anywhere.

The crate root (`lib.rs`, `main.rs`) is not a node: it declares every module and, in the
service shape, wires them and holds the state the domain modules extend, so each module
hangs off it by design. The modules among themselves must form no circle.

Usage: scripts/check-import-cycles.py [ROOT]   (exit 1 and the cycles, or 0)
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT_NODE = "crate"


def blank_literals(text: str) -> str:
    """The text with comments removed and string and char literals emptied."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif c == "r" and re.match(r'r#*"', text[i:]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            out.append('""')
            i = n if end < 0 else end + 1 + len(hashes)
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""')
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:]):
            i += len(re.match(r"'(\\.|[^\\'])'", text[i:]).group(0))
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def strip(text: str) -> str:
    """The text without comments, string literals and `#[cfg(test)]` items."""
    text = blank_literals(text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        # Skip the item that follows: up to its matching closing brace (or `;`).
        j = m.end()
        depth = 0
        while j < len(text):
            c = text[j]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    j += 1
                    break
            elif c == ";" and depth == 0:
                j += 1
                break
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def module_path(src: Path, file: Path) -> list[str]:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    if parts in (["lib"], ["main"]):
        return []
    return parts


def group_heads(body: str) -> list[str]:
    """First segment of each path in a `{...}` use group (nested groups flattened)."""
    heads, depth, current = [], 0, ""
    for c in body:
        if c == "{":
            depth += 1
            if depth == 1:
                continue
        elif c == "}":
            depth -= 1
        if depth == 0 and c == ",":
            heads.append(current)
            current = ""
            continue
        if depth >= 1 and (depth > 1 or c not in "{}"):
            current += c
        elif depth == 0:
            current += c
    heads.append(current)
    result = []
    for head in heads:
        head = head.strip()
        m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)", head)
        if m:
            result.append(m.group(1))
    return result


def braced(text: str, start: int) -> str:
    depth, j = 0, start
    while j < len(text):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[start : j + 1]
        j += 1
    return text[start:]


def references(text: str, here: list[str]) -> set[str]:
    """Top-level modules (or names of the root) that this file's code names."""
    found: set[str] = set()
    for m in re.finditer(r"\b(crate|super)((?:::super)*)::", text):
        if m.group(1) == "crate":
            base: list[str] = []
        else:
            ups = 1 + m.group(2).count("super")
            base = here[: max(len(here) - ups, 0)]
        rest = text[m.end() :]
        if rest.startswith("{"):
            names = group_heads(braced(rest, 0)[1:-1])
        else:
            n = re.match(r"([A-Za-z_][A-Za-z0-9_]*)", rest)
            names = [n.group(1)] if n else []
        for name in names:
            if name == "self":
                path = base
            else:
                path = base + [name]
            found.add(path[0] if path else ROOT_NODE)
    return found


def crate_graph(src: Path) -> dict[str, set[str]]:
    files = sorted(src.rglob("*.rs"))
    modules = set()
    for f in files:
        p = module_path(src, f)
        if p:
            modules.add(p[0])
    root_file = next((src / n for n in ("lib.rs", "main.rs") if (src / n).exists()), None)
    reexports: dict[str, str] = {}
    if root_file:
        root_text = strip(root_file.read_text())
        for m in re.finditer(r"\bpub\s+use\s+(?:crate::|self::)?([a-z_][a-z0-9_]*)::", root_text):
            rest = root_text[m.end() :]
            if rest.startswith("{"):
                names = group_heads(braced(rest, 0)[1:-1])
            else:
                names = re.findall(r"^\s*([A-Za-z_][A-Za-z0-9_]*)", rest)[:1]
            for name in names:
                if name != "self":
                    reexports[name] = m.group(1)
    graph: dict[str, set[str]] = {}
    for f in files:
        here = module_path(src, f)
        node = here[0] if here else ROOT_NODE
        if node == ROOT_NODE:
            continue
        for target in references(strip(f.read_text()), here):
            if target not in modules and target != ROOT_NODE:
                target = reexports.get(target, ROOT_NODE)
            if target != node and target != ROOT_NODE:
                graph.setdefault(node, set()).add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return found


def edges_within(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    members = set(component)
    return [
        f"{a} -> {b}"
        for a in sorted(members)
        for b in sorted(graph.get(a, ()))
        if b in members
    ]


def members(root: Path) -> list[Path]:
    manifest = tomllib.loads((root / "Cargo.toml").read_text())
    paths = []
    for pattern in manifest.get("workspace", {}).get("members", []):
        paths.extend(sorted(p for p in root.glob(pattern) if (p / "Cargo.toml").exists()))
    return paths


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    failed = False
    checked = 0
    for member in members(root):
        src = member / "src"
        if not src.is_dir():
            continue
        checked += 1
        for component in cycles(crate_graph(src)):
            failed = True
            rel = member.relative_to(root)
            print(f"{rel}: modules import each other in a circle: {', '.join(component)}")
            for edge in edges_within(crate_graph(src), component):
                print(f"    {edge}")
    if not failed:
        print(f"import cycles: none in {checked} crates")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
