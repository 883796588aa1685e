"""Provenance: what code, packages and machine produced a run.

``code_version`` is ``git describe`` of the checkout when there is one (with ``-dirty``
when files are changed), else the package version; ``code_sha256`` hashes the package's
own source and templates, so it changes with any edit, committed or not.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

__all__ = ["PACKAGES", "code_sha256", "code_version", "machine", "package_versions"]

PACKAGES = ("glassbox-audit", "tensorflow-cpu", "tensorflow", "keras", "numpy", "scikit-image",
            "opencv-python-headless", "matplotlib", "jinja2", "weasyprint", "sqlite-utils", "tqdm", "click")

_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_DIR = _PACKAGE_DIR.parent


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def code_version() -> str:
    try:
        out = subprocess.run(["git", "-C", str(_REPO_DIR), "describe", "--always", "--dirty", "--abbrev=12"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return f"git {out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"glassbox-audit {importlib.metadata.version('glassbox-audit')}"
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def code_sha256(templates: Path | None = None) -> str:
    """sha256 over the package's Python files and the templates, by relative path."""
    h = hashlib.sha256()
    roots = [(_PACKAGE_DIR, "*.py")]
    if templates is not None and templates.is_dir():
        roots.append((templates, "*"))
    for root, pattern in roots:
        for p in sorted(root.rglob(pattern)):
            if p.is_file() and "__pycache__" not in p.parts:
                h.update(f"{root.name}/{p.relative_to(root).as_posix()}\n".encode())
                h.update(p.read_bytes())
    return h.hexdigest()


def machine() -> dict[str, object]:
    return {"hostname": platform.node(), "system": platform.system(), "release": platform.release(),
            "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version()}
