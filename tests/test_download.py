"""`memaware download` against a local HTTP server on 127.0.0.1 serving fabricated archives."""
import hashlib
import io
import json
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

import memaware.cli.data  # noqa: F401  (registers the commands)
from memaware.cli import app
from memaware.data.download import MARKER, DownloadError, Source, download, load_sources


def tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Server:
    """Serves `files` by path; honours Range; `cut` paths send half their body once, then drop."""

    def __init__(self):
        self.files, self.cut, self.requests, self.honour_range = {}, set(), [], True
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                asked = self.headers.get("Range") if server.honour_range else None
                start = int(asked[6:].split("-")[0]) if asked else 0
                if start >= len(body):
                    self.send_error(416)
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if self.path in server.cut:
                    server.cut.discard(self.path)
                    self.wfile.write(body[start:start + len(body) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 5
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def source(self, path: str, body: bytes, archive: str, **kw) -> Source:
        self.files[path] = body
        return Source(self.url + path, path.strip("/"), archive, sha256=kw.pop("sha256", sha(body)), **kw)


@pytest.fixture
def server():
    s = Server()
    thread = threading.Thread(target=s.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()
    thread.join(5)


def test_tar_and_zip_unpack_atomically_with_marker(server, tmp_path):
    tar = tar_gz({"bench/metadata.csv": b"a,b\n1,2\n", "bench/img/x.txt": b"x"})
    zipped = zip_bytes({"texts/t.jsonl": b'{"k": 1}\n'})
    table = {"bench": (server.source("/bench.tar.gz", tar, "tar.gz"),
                       server.source("/extra.zip", zipped, "zip", into="more"),
                       server.source("/notes.csv", b"n\n1\n", "file"))}
    result = download("bench", tmp_path, table)
    target = tmp_path / "bench"
    assert result.target == target and not result.already
    assert (target / "bench" / "metadata.csv").read_bytes() == b"a,b\n1,2\n"
    assert (target / "more" / "texts" / "t.jsonl").read_bytes() == b'{"k": 1}\n'
    assert (target / "notes.csv").read_bytes() == b"n\n1\n"
    record = json.loads((target / MARKER).read_text())["files"]
    assert [f["sha256"] for f in record] == [sha(tar), sha(zipped), sha(b"n\n1\n")]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".downloads", "bench"]
    assert list((tmp_path / ".downloads").iterdir()) == []  # archives removed once unpacked
    n_requests = len(server.requests)
    assert download("bench", tmp_path, table).already and len(server.requests) == n_requests


def test_checksum_mismatch_removes_the_file_and_leaves_no_target(server, tmp_path):
    table = {"bad": (server.source("/bad.tar.gz", tar_gz({"f": b"1"}), "tar.gz", sha256="0" * 64),)}
    with pytest.raises(DownloadError, match="bad.tar.gz: checksum mismatch .*expected 0000"):
        download("bad", tmp_path, table)
    assert not (tmp_path / "bad").exists()
    assert list((tmp_path / ".downloads").iterdir()) == []


def test_size_mismatch_is_reported(server, tmp_path):
    table = {"short": (server.source("/s.csv", b"abc", "file", size=10),)}
    with pytest.raises(DownloadError, match="size 3 bytes, expected 10"):
        download("short", tmp_path, table)


def test_corrupt_archive_with_right_checksum_unpacks_nothing(server, tmp_path):
    junk = b"not a tar archive at all" * 10
    table = {"junk": (server.source("/junk.tar.gz", junk, "tar.gz"),)}
    with pytest.raises(DownloadError, match="junk.tar.gz: cannot unpack as tar.gz"):
        download("junk", tmp_path, table)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".downloads"]  # no target, no temp folder


def test_unsafe_archive_paths_are_refused(server, tmp_path):
    table = {"evil": (server.source("/evil.zip", zip_bytes({"../outside.txt": b"x"}), "zip"),)}
    with pytest.raises(DownloadError, match="unsafe path '../outside.txt'"):
        download("evil", tmp_path / "d", table)
    assert not (tmp_path / "outside.txt").exists()


def test_gone_source_says_so(server, tmp_path):
    table = {"gone": (Source(server.url + "/missing.tar.gz", "missing.tar.gz", sha256="0" * 64),)}
    with pytest.raises(DownloadError, match="HTTP 404 .*the source is gone"):
        download("gone", tmp_path, table)


def test_interrupted_download_resumes_with_range(server, tmp_path):
    body = tar_gz({"data/blob.bin": bytes(range(256)) * 400})
    table = {"big": (server.source("/big.tar.gz", body, "tar.gz"),)}
    server.cut.add("/big.tar.gz")
    with pytest.raises(DownloadError, match="interrupted after .* run the command again to resume"):
        download("big", tmp_path, table)
    part = tmp_path / ".downloads" / "big.tar.gz.part"
    assert part.stat().st_size == len(body) // 2
    download("big", tmp_path, table)
    assert server.requests[-1] == ("/big.tar.gz", f"bytes={len(body) // 2}-")
    assert (tmp_path / "big" / "data" / "blob.bin").read_bytes() == bytes(range(256)) * 400


def test_server_ignoring_range_restarts_the_file(server, tmp_path):
    body = b"0123456789" * 50
    table = {"plain": (server.source("/plain.csv", body, "file"),)}
    (tmp_path / ".downloads").mkdir()
    (tmp_path / ".downloads" / "plain.csv.part").write_bytes(b"XXXXX")  # a stale start the server won't resume
    server.honour_range = False
    download("plain", tmp_path, table)
    assert server.requests[-1] == ("/plain.csv", "bytes=5-")
    assert (tmp_path / "plain" / "plain.csv").read_bytes() == body


def test_whole_partial_file_is_kept_when_server_answers_416(server, tmp_path):
    body = b"x,y\n1,2\n"
    table = {"done": (server.source("/done.csv", body, "file"),)}
    (tmp_path / ".downloads").mkdir()
    (tmp_path / ".downloads" / "done.csv.part").write_bytes(body)
    download("done", tmp_path, table)
    assert (tmp_path / "done" / "done.csv").read_bytes() == body


def test_refusals_before_any_request(server, tmp_path):
    no_sha = {"x": (Source(server.url + "/x.csv", "x.csv", "file"),)}
    with pytest.raises(DownloadError, match="no sha256 is known for x.csv; rerun with --unverified"):
        download("x", tmp_path, no_sha)
    with pytest.raises(DownloadError, match="no public URL is known for y.zip: by hand"):
        download("y", tmp_path, {"y": (Source(None, "y.zip", "zip", note="by hand"),)})
    with pytest.raises(DownloadError, match="no download known for 'z'"):
        download("z", tmp_path, no_sha)
    assert server.requests == []


def test_offline_gives_one_line(tmp_path):
    table = {"off": (Source("http://127.0.0.1:9/x.csv", "x.csv", "file", sha256="0" * 64),)}  # discard port
    with pytest.raises(DownloadError, match=r"cannot reach 127.0.0.1:9 .*offline or blocked\?"):
        download("off", tmp_path, table, timeout=2)


def write_table(path, server, table: dict) -> None:
    path.write_text(json.dumps({name: [{**vars(s)} for s in files] for name, files in table.items()}))


def test_cli_download_with_a_source_table(server, tmp_path):
    good = server.source("/ok.zip", zip_bytes({"a.txt": b"hello"}), "zip")
    unverified = Source(server.url + "/plain.csv", "plain.csv", "file")
    server.files["/plain.csv"] = b"p\n"
    table_file = tmp_path / "sources.json"
    write_table(table_file, server, {"ok": (good,), "plain": (unverified,), "bad": (
        server.source("/b.csv", b"b", "file", sha256="1" * 64),), "gone": (Source(server.url + "/nope", "n", "file",
                                                                                 sha256="2" * 64),)})
    assert set(load_sources(table_file)) == {"ok", "plain", "bad", "gone"}
    runner = CliRunner()
    args = ["--to", str(tmp_path / "data"), "--sources", str(table_file)]
    ok = runner.invoke(app, ["download", "ok", *args])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "data" / "ok" / "a.txt").read_text() == "hello"
    refused = runner.invoke(app, ["download", "plain", *args])
    assert refused.exit_code == 2 and "rerun with --unverified" in refused.output
    plain = runner.invoke(app, ["download", "plain", "--unverified", *args])
    assert plain.exit_code == 0 and f"its sha256 is {sha(b'p' + bytes([10]))}" in plain.output
    for name, message in (("bad", "checksum mismatch"), ("gone", "HTTP 404")):
        result = runner.invoke(app, ["download", name, *args])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    listing = runner.invoke(app, ["download", "--list"])
    assert listing.exit_code == 0 and "waterbirds" in listing.output and "unknown" in listing.output
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = runner.invoke(app, ["download", "ok", "--sources", str(broken)])
    assert result.exit_code == 2 and "not a source table" in result.output
