"""Print the package's internal import graph: one line per module, the modules it imports.

Reads the source with ``ast`` (nothing is imported), counting imports made inside functions
too, so a deferred import still shows as a dependency. Stage walls (see the README's
architecture section) are checked with ``--check``: ``report`` and ``llm`` import neither
``models`` nor ``xai``, ``store`` imports no TensorFlow, and no module imports a private
name from another.

    python tools/import_graph.py [--root glassbox_audit] [--check]
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

# (importer prefix, forbidden import prefix)
WALLS = (
    ("glassbox_audit.report", "glassbox_audit.models"),
    ("glassbox_audit.report", "glassbox_audit.xai"),
    ("glassbox_audit.llm", "glassbox_audit.models"),
    ("glassbox_audit.llm", "glassbox_audit.xai"),
    ("glassbox_audit.store", "tensorflow"),
    ("glassbox_audit.store", "keras"),
    ("glassbox_audit.config", "glassbox_audit.llm"),
    ("glassbox_audit.data", "glassbox_audit.store"),
    ("glassbox_audit.data", "glassbox_audit.report"),
)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path) -> tuple[set[str], list[str]]:
    """Modules ``path`` imports (absolute names), and private names it imports from others."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    private: list[str] = []
    modules: dict[str, str] = {}  # local name -> internal module it is bound to
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                sub = f"{target}.{a.name}"
                is_module = ((root.parent / Path(*sub.split("."))).with_suffix(".py").exists()
                             or (root.parent / Path(*sub.split(".")) / "__init__.py").exists())
                found.add(sub if is_module else target)
                if is_module:
                    modules[a.asname or a.name] = sub
                if a.name.startswith("_") and not a.name.startswith("__"):
                    private.append(f"{name}: from {target} import {a.name}")
            if any(p.startswith("_") and not p.startswith("__") for p in target.split(".")):
                private.append(f"{name}: imports the private module {target}")
    for node in ast.walk(tree):  # module.private_name, through a module imported above
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            private.append(f"{name}: uses {modules[node.value.id]}.{node.attr}")
    return found, sorted(set(private))


def graph(root: Path) -> tuple[dict[str, list[str]], list[str]]:
    edges: dict[str, list[str]] = {}
    private: list[str] = []
    top = root.name
    for path in sorted(root.rglob("*.py")):
        found, priv = imports(path, root)
        edges[module_name(path, root)] = sorted(m for m in found if m.split(".")[0] in (top, "tensorflow", "keras")
                                                and m != module_name(path, root))
        private += priv
    return edges, private


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1] / "glassbox_audit"))
    ap.add_argument("--check", action="store_true", help="exit 1 if a stage wall or a private import is broken")
    args = ap.parse_args(argv)
    edges, private = graph(Path(args.root))
    for module, deps in edges.items():
        short = [d.replace("glassbox_audit.", "") for d in deps]
        print(f"{module.replace('glassbox_audit.', '') or module}: {', '.join(short) or '-'}")
    broken = [f"{m} imports {d}" for m, deps in edges.items() for d in deps
              for src, bad in WALLS if (m == src or m.startswith(src + ".")) and (d == bad or d.startswith(bad + "."))]
    for line in private + broken:
        print(f"! {line}")
    return 1 if args.check and (private or broken) else 0


if __name__ == "__main__":
    sys.exit(main())
