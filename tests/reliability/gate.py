"""A handshake that makes "another process holds the lock while a run needs it" happen every time.

A locker process started beside a run and polling for the run's database races it: a run
whose writes end before the locker gets in (a busy machine, a slow interpreter start) never
meets the lock, and the locker polls on for a file that has been renamed. So the run is gated
instead: when it opens a database matching a pattern it writes that path to a signal file and
waits until the database is locked by someone else; the locker waits for the signal, locks
exactly that database, holds it and releases it. The run's own code is unchanged; the gate
wraps ``AuditStore.__init__`` in the run's process (this one, or a child started through
:data:`GATED_MAIN`).

Kept free of heavy imports: a gated child imports it before the CLI.
"""

from __future__ import annotations

import fnmatch
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

__all__ = ["GATED_MAIN", "PATIENCE", "install", "locker", "uninstall", "wait_until_locked"]

# How long either side waits for the other before failing loudly instead of hanging.
PATIENCE = 120.0

_LOCKER = textwrap.dedent("""
    import sqlite3, sys, time
    signal, hold, patience = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    deadline = time.monotonic() + patience
    while True:
        try:
            with open(signal) as f:
                path = f.read()
            break
        except FileNotFoundError:
            if time.monotonic() > deadline:
                sys.exit("no run opened the database")
            time.sleep(0.005)
    if not path:
        sys.exit("the run ended before opening the database")
    conn = sqlite3.connect(path, timeout=patience, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    print("locked", path, flush=True)
    if hold < 0:
        sys.stdin.readline()  # hold until told
    else:
        time.sleep(hold)
    conn.execute("ROLLBACK")
    print("released", flush=True)
""")

# ``python -c GATED_MAIN TESTS PATTERN SIGNAL ARGS...``: the command line with the gate installed.
GATED_MAIN = textwrap.dedent("""
    import sys
    tests, pattern, signal = sys.argv[1:4]
    sys.path.insert(0, tests)
    from reliability.gate import install
    install(pattern, signal)
    sys.argv = ["glassbox-audit", *sys.argv[4:]]
    from glassbox_audit.cli import main
    main()
""")


def locker(signal: Path, hold: float) -> subprocess.Popen:
    """Another process that, once ``signal`` names a database, takes ``BEGIN EXCLUSIVE`` on it,
    holds it ``hold`` seconds (or until stdin gets a line, for -1) and releases it unwritten."""
    return subprocess.Popen([sys.executable, "-c", _LOCKER, str(signal), str(hold), str(PATIENCE)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until_locked(path: Path, patience: float = PATIENCE) -> None:
    """Return once another connection holds a lock on ``path`` that keeps readers out."""
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        conn = sqlite3.connect(uri, uri=True, timeout=0)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                return
            raise
        finally:
            conn.close()
        time.sleep(0.005)
    raise TimeoutError(f"{path}: no other process locked it within {patience:g} s")


def install(pattern: str, signal: str | Path) -> None:
    """Gate the first database opened at a path matching ``pattern`` (a glob): announce it in
    ``signal`` and wait for the locker. Later opens pass freely."""
    from glassbox_audit.store import AuditStore

    original = AuditStore.__init__
    signal = Path(signal)

    def gated(self, path, readonly=False):
        original(self, path, readonly)
        if not signal.exists() and fnmatch.fnmatch(str(path), pattern):
            part = signal.with_name(signal.name + ".part")
            part.write_text(str(path))
            os.replace(part, signal)  # the locker never reads half a path
            wait_until_locked(path)

    gated.original = original
    AuditStore.__init__ = gated


def uninstall() -> None:
    from glassbox_audit.store import AuditStore

    AuditStore.__init__ = getattr(AuditStore.__init__, "original", AuditStore.__init__)
