"""The GGUF downloader against a local HTTP server: pinned hash checked, nothing left behind on failure."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from glassbox_audit.cli import cli
from glassbox_audit.errors import ModelError
from glassbox_audit.llm.fetch import assemble, download

PAYLOAD = bytes(range(256)) * 4096 + b"GGUF-test-tail"  # about 1 MB, several read chunks
GOOD = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/model.gguf":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif self.path == "/truncated.gguf":
            # Promise the whole file, send half, hang up: an interrupted transfer.
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
            self.wfile.flush()
            self.close_connection = True
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_with_matching_hash_writes_the_file(server, tmp_path):
    target = tmp_path / "llm" / "model.gguf"
    assert download(f"{server}/model.gguf", target, GOOD) == target
    assert target.read_bytes() == PAYLOAD
    assert _leftovers(target.parent) == ["model.gguf"]


def test_hash_mismatch_raises_and_leaves_nothing(server, tmp_path):
    target = tmp_path / "llm" / "model.gguf"
    with pytest.raises(ModelError, match="does not match"):
        download(f"{server}/model.gguf", target, "0" * 64)
    assert _leftovers(target.parent) == []


def test_interrupted_download_is_cleaned_up(server, tmp_path):
    target = tmp_path / "llm" / "model.gguf"
    with pytest.raises(ModelError, match="interrupted"):
        download(f"{server}/truncated.gguf", target, GOOD)
    assert _leftovers(target.parent) == []


def test_missing_file_and_unpinned_hash_and_other_schemes_are_refused(server, tmp_path):
    with pytest.raises(ModelError, match="cannot download"):
        download(f"{server}/absent.gguf", tmp_path / "m.gguf", GOOD)
    with pytest.raises(ModelError, match="no sha256"):
        download(f"{server}/model.gguf", tmp_path / "m.gguf", "")
    with pytest.raises(ModelError, match="http"):
        download(f"file://{tmp_path}/m.gguf", tmp_path / "m.gguf", GOOD)
    assert _leftovers(tmp_path) == []


def test_existing_file_with_the_pinned_hash_is_kept(server, tmp_path):
    target = tmp_path / "model.gguf"
    target.write_bytes(PAYLOAD)
    before = target.stat().st_mtime_ns
    download(f"{server}/absent.gguf", target, GOOD)  # would fail if it tried to download
    assert target.stat().st_mtime_ns == before


def test_assemble_concatenates_parts_in_order_and_checks_the_hash(tmp_path):
    parts = []
    for i, start in enumerate(range(0, len(PAYLOAD), 300_000)):
        parts.append(tmp_path / f"part{i:02d}.bin")
        parts[-1].write_bytes(PAYLOAD[start:start + 300_000])
    assert assemble(parts, tmp_path / "out" / "m.gguf", GOOD).read_bytes() == PAYLOAD
    with pytest.raises(ModelError, match="does not match"):
        assemble(list(reversed(parts)), tmp_path / "out2" / "m.gguf", GOOD)
    assert _leftovers(tmp_path / "out2") == []


def test_llm_fetch_command_downloads_and_records_the_pin(server, tmp_path):
    runner = CliRunner()
    models = tmp_path / "models"
    res = runner.invoke(cli, ["llm", "fetch", "tinyllama-1.1b-chat", "--url", f"{server}/model.gguf",
                              "--sha256", GOOD, "--models-dir", str(models)], obj={})
    assert res.exit_code == 0, res.output
    target = models / "llm" / "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf"
    assert res.output.strip().endswith(str(target))
    assert target.read_bytes() == PAYLOAD
    assert target.with_name(target.name + ".sha256").read_text().split()[0] == GOOD
    bad = runner.invoke(cli, ["llm", "fetch", "tinyllama-1.1b-chat", "--url", f"{server}/model.gguf",
                              "--models-dir", str(tmp_path / "other")], obj={})
    assert bad.exit_code == 2 and "sha256" in bad.output
