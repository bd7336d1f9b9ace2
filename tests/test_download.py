"""The download stage against mirrors served on 127.0.0.1: fallback, verification, clear failure."""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import subprocess
import sys
import threading
import tracemalloc
import zlib
from pathlib import Path

import pytest

from stages.core import mirrors
from stages.core.errors import PipelineError
from stages.core.mirrors import MNIST_FILES
from tests.conftest import ROOT


@pytest.fixture
def serve():
    """Serve a folder over HTTP on loopback; returns its base URL."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def damaged_copy(source: Path, target: Path, damage) -> Path:
    target.mkdir()
    for name in MNIST_FILES.values():
        (target / f"{name}.gz").write_bytes(damage((source / f"{name}.gz").read_bytes()))
    return target


def test_good_mirror_gives_verified_decompressed_files(serve, mirror, tmp_path):
    folder, checksums = mirror
    out = tmp_path / "raw"
    mirrors.download_all(checksums, [serve(folder)], out)
    assert sorted(path.name for path in out.iterdir()) == sorted(MNIST_FILES.values())
    for name in MNIST_FILES.values():
        assert mirrors.sha256((out / name).read_bytes()) == checksums[name]


def test_a_different_gzip_wrapper_with_the_same_content_is_accepted(serve, mirror, tmp_path):
    folder, checksums = mirror
    rewrapped = damaged_copy(folder, tmp_path / "rewrapped", lambda gz: gzip.compress(gzip.decompress(gz), 1))
    mirrors.download_all(checksums, [serve(rewrapped)], tmp_path / "raw")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda gz: gzip.compress(gzip.decompress(gz)[:-1] + b"\x01"), id="wrong-content"),
        pytest.param(lambda gz: gz[: len(gz) // 2], id="truncated"),
        pytest.param(lambda gz: b"<html>not found</html>", id="not-gzip"),
    ],
)
def test_bad_file_on_one_mirror_falls_through_to_the_next(serve, mirror, tmp_path, damage):
    folder, checksums = mirror
    bad = serve(damaged_copy(folder, tmp_path / "bad", damage))
    mirrors.download_all(checksums, [bad, serve(folder)], tmp_path / "raw")
    for name in MNIST_FILES.values():
        assert mirrors.sha256((tmp_path / "raw" / name).read_bytes()) == checksums[name]


def test_all_mirrors_failing_lists_every_url_and_reason_and_leaves_nothing(serve, mirror, tmp_path):
    folder, checksums = mirror
    (tmp_path / "empty").mkdir()
    empty = serve(tmp_path / "empty")
    corrupt = serve(damaged_copy(folder, tmp_path / "corrupt", lambda gz: gz[:100]))
    out = tmp_path / "raw"
    with pytest.raises(PipelineError) as error:
        mirrors.download_all(checksums, [empty, corrupt, "file:///nonexistent/mnist/"], out)
    message = str(error.value)
    assert f"{empty}train-images-idx3-ubyte.gz: HTTP 404" in message
    assert f"{corrupt}train-images-idx3-ubyte.gz: not a complete gzip file" in message
    assert "file:///nonexistent/mnist/train-images-idx3-ubyte.gz: unreachable" in message
    assert "MNIST_MIRRORS=" in message
    assert not out.exists() or not any(out.iterdir())


def gzip_bomb(size: int) -> bytes:
    """``size`` zero bytes gzipped, into about a thousandth of that."""
    compressor, zeros = zlib.compressobj(9, wbits=zlib.MAX_WBITS | 16), bytes(1 << 20)
    return b"".join(compressor.compress(zeros) for _ in range(size >> 20)) + compressor.flush()


def with_file(source: Path, target: Path, name: str, content: bytes) -> Path:
    """A copy of the mirror ``source`` whose ``name``.gz is ``content``."""
    shutil.copytree(source, target)
    (target / f"{name}.gz").write_bytes(content)
    return target


def test_a_gzip_bomb_is_given_up_on_at_mnists_size_and_the_next_mirror_serves(serve, mirror, tmp_path):
    folder, checksums = mirror
    name = "train-labels-idx1-ubyte"
    bomb = serve(with_file(folder, tmp_path / "bomb", name, gzip_bomb(100 << 20)))
    tracemalloc.start()
    try:
        content = mirrors.fetch_verified(name, checksums[name], [bomb, serve(folder)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert mirrors.sha256(content) == checksums[name]
    assert peak < 1 << 20  # the bomb is 100 MiB
    with pytest.raises(PipelineError) as error:
        mirrors.download_all(checksums, [bomb], tmp_path / "raw")
    assert f"{bomb}{name}.gz: larger than MNIST's 60,008 bytes: not the MNIST file" in str(error.value)


def test_a_gzip_stream_longer_than_any_mnist_gzip_is_cut_off_and_the_next_mirror_serves(serve, mirror, tmp_path):
    folder, checksums = mirror
    name = "train-labels-idx1-ubyte"
    empty_blocks = gzip.compress(b"")[:10] + b"\x00\x00\x00\xff\xff" * 100_000  # a header, then never any content
    endless = serve(with_file(folder, tmp_path / "endless", name, empty_blocks))
    with pytest.raises(PipelineError) as error:
        mirrors.download_all(checksums, [endless], tmp_path / "raw")
    assert f"{endless}{name}.gz: more than 120,016 bytes of gzip for MNIST's 60,008: not the MNIST file" in str(
        error.value
    )
    mirrors.download_all(checksums, [endless, serve(folder)], tmp_path / "raw")
    assert mirrors.sha256((tmp_path / "raw" / name).read_bytes()) == checksums[name]


def test_a_failed_download_keeps_the_previous_files_byte_for_byte(serve, mirror, tmp_path):
    folder, checksums = mirror
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in MNIST_FILES.values():
        (raw / name).write_bytes(f"an older {name}".encode())
    before = {path.name: path.read_bytes() for path in raw.iterdir()}
    half = tmp_path / "half"  # serves train images, then lacks the labels
    shutil.copytree(folder, half)
    (half / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(PipelineError, match="train-labels-idx1-ubyte.gz: HTTP 404"):
        mirrors.download_all(checksums, [serve(half)], raw)
    assert {path.name: path.read_bytes() for path in raw.iterdir()} == before


def test_environment_mirrors_come_first_and_must_be_urls():
    env = {"MNIST_MIRRORS": " file:///a/ , http://127.0.0.1:9/b"}
    assert mirrors.mirrors_to_try(["https://default/"], env) == [
        "file:///a/",
        "http://127.0.0.1:9/b/",
        "https://default/",
    ]
    with pytest.raises(PipelineError, match="'/srv/mnist' is not a URL"):
        mirrors.mirrors_to_try([], {"MNIST_MIRRORS": "/srv/mnist"})


def test_verified_file_already_present_is_not_fetched_again(mirror, tmp_path, capsys):
    folder, checksums = mirror
    out = tmp_path / "raw"
    mirrors.download_all(checksums, [folder.as_uri() + "/"], out)
    mirrors.download_all(checksums, ["http://127.0.0.1:9/unreachable/"], out)
    assert "already present and verified" in capsys.readouterr().out


def test_download_stage_uses_mnist_mirrors_and_exits_2_with_one_error(project, tmp_path, in_process):
    shutil.rmtree(project.root / "data/raw")
    assert in_process(project, "download")[0] == 0
    assert len(list((project.root / "data/raw").iterdir())) == 4
    shutil.rmtree(project.root / "data/raw")
    project.env["MNIST_MIRRORS"] = (tmp_path / "nowhere").as_uri()
    code, _, err = in_process(project, "download")
    assert code == 2
    assert err.startswith("error: could not fetch a verified train-images-idx3-ubyte")
    assert "Traceback" not in err
    assert not (project.root / "data/raw").exists()


def test_the_download_stage_loads_no_torch():
    """Fetching four files needs no deep-learning stack: the stage starts in a fraction of a second."""
    check = "import sys, stages.download; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", check], cwd=ROOT).returncode == 0
