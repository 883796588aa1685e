"""The stage walls and the no-private-imports rule, read from the source (tools/import_graph.py)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_stage_wall_is_crossed_and_no_private_name_is_imported_across_modules():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "import_graph.py"), "--check"],
                         capture_output=True, text=True)
    broken = [line for line in out.stdout.splitlines() if line.startswith("!")]
    assert out.returncode == 0 and not broken, "\n".join(broken)
    graph = dict(line.split(": ", 1) for line in out.stdout.splitlines() if not line.startswith("!"))
    assert "models" not in graph["report.context"] and "xai" not in graph["report.render"]


def test_the_checker_sees_a_private_import_and_a_crossed_wall(tmp_path):
    pkg = tmp_path / "glassbox_audit"
    (pkg / "report").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "helpers.py").write_text("_secret = 1\n")
    (pkg / "report" / "__init__.py").write_text("from ..helpers import _secret\nfrom .. import xai\n")
    (pkg / "xai.py").write_text("")
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "import_graph.py"), "--root", str(pkg), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert "from glassbox_audit.helpers import _secret" in out.stdout
    assert "glassbox_audit.report imports glassbox_audit.xai" in out.stdout
