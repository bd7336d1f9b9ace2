"""``python -m stages draw``: the page, its JSON API and its errors, served from the trained model;
and the page in a real headless browser, drawn on with pointer events.

The browser part doubles as the README's screenshot: against a server of a real model,

    python -m tests.test_draw http://127.0.0.1:8000/ docs/draw.png [digit: 7 by default, or 1]
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import torch
from PIL import Image, ImageDraw

from stages import draw as draw_server
from stages.core.preprocess import load_digit
from tests.test_preprocess import nan_tiff, two_page_tiff

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1000,900",
)
STROKES = {  # each digit's strokes, as points in CSS pixels from the drawing area's centre
    "1": [[(0, -90), (0, 90)]],  # a vertical bar: what testing/synthetic.py's digits call 1
    "7": [[(-70, -85), (70, -85), (-15, 95)]],
}


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    root: Path
    log: Path

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname, parts.port

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None, **headers):
        """(status, headers, body as JSON where the server says it is JSON)."""
        connection = http.client.HTTPConnection(*self.address, timeout=10)
        try:
            connection.request(method, path, body, headers | ({"Content-Type": content_type} if content_type else {}))
            response = connection.getresponse()
            content = response.read()
        finally:
            connection.close()
        is_json = response.getheader("Content-Type") == "application/json"
        return response.status, response.headers, json.loads(content) if is_json else content

    def raw(self, head: str) -> tuple[int, dict]:
        """Sends ``head`` (request line and headers) and no body; returns the status and JSON answer."""
        with socket.create_connection(self.address, timeout=10) as connection:
            connection.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
            answer = b"".join(iter(lambda: connection.recv(65536), b""))
        status_line, _, content = answer.partition(b"\r\n")
        return int(status_line.split()[1]), json.loads(content.partition(b"\r\n\r\n")[2])


@pytest.fixture(scope="module")
def server(reproduced, tmp_path_factory) -> Server:
    """One ``python -m stages draw --port 0`` for the module, as a user starts it."""
    log = tmp_path_factory.mktemp("draw") / "server.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "stages", "draw", "--port", "0"],
            cwd=reproduced.root,
            env=reproduced.env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    first_line = process.stdout.readline()
    url = re.search(r"http://\S+", first_line)
    assert url, f"no URL printed: {first_line!r} {log.read_text()}"
    yield Server(process, url.group(), reproduced.root, log)
    process.terminate()
    process.wait(timeout=10)


def drawing(fmt: str = "PNG", background: str = "white", ink: str = "black", mode: str = "L") -> bytes:
    """A 280x280 canvas with one vertical stroke, a "1" (as testing/synthetic.py draws it), encoded."""
    image = Image.new(mode, (280, 280), background)
    ImageDraw.Draw(image).rectangle((128, 40, 152, 240), fill=ink)
    encoded = io.BytesIO()
    image.save(encoded, fmt)
    return encoded.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels and holds none: a decompression bomb's shape."""

    def chunk(kind: bytes, content: bytes) -> bytes:
        return struct.pack(">I", len(content)) + kind + content + struct.pack(">I", zlib.crc32(kind + content))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (drawing("PNG"), "image/png"),
        (drawing("PNG", background="black", ink="white"), "image/png"),
        (drawing("PNG", background=(0, 0, 0, 0), ink=(0, 0, 0, 255), mode="RGBA"), "image/png"),
        (drawing("JPEG"), "image/jpeg"),
        (drawing("GIF"), "image/gif"),
        (drawing("WEBP"), "image/webp"),
        (drawing("PNG"), "application/octet-stream"),
    ],
    ids=["png", "white-on-black", "transparent-canvas", "jpeg", "gif", "webp", "octet-stream"],
)
def test_a_drawn_one_is_read_as_one_in_every_accepted_image_type(server, body, content_type):
    status, _, answer = server.request("POST", "/api/predict", body, content_type)
    assert status == 200 and answer["digit"] == 1


def test_a_prediction_is_what_predict_json_gives_plus_every_probability_and_the_image(server, reproduced, tmp_path):
    upload = tmp_path / "one.png"
    upload.write_bytes(drawing())
    _, _, answer = server.request("POST", "/api/predict", upload.read_bytes(), "image/png")
    [predicted] = json.loads(reproduced.stage("predict", str(upload), "--json").stdout)
    assert {**answer, "input": predicted["input"]} == {
        **predicted,
        "probabilities": answer["probabilities"],
        "image": answer["image"],
    }
    assert len(answer["probabilities"]) == 10 and abs(sum(answer["probabilities"]) - 1) < 1e-5
    assert answer["probabilities"][1] == answer["top"][0]["probability"]
    assert answer["image"] == load_digit(upload).tolist()


def test_the_model_endpoint_names_architecture_params_and_the_model_files_digest(server, reproduced):
    status, _, info = server.request("GET", "/api/model")
    params, metrics = reproduced.params(), json.loads(reproduced.read("metrics/evaluate.json"))
    assert status == 200 and all(isinstance(value, str) for value in info.values())
    assert info["sha256"] == hashlib.sha256((server.root / "models/model.pt").read_bytes()).hexdigest()
    assert info["arch"].startswith(f"{params['arch']} (hidden [128, 64], activation relu")
    assert info["optimizer"].startswith(f"name {params['optimizer']}")
    assert f"epochs {params['train']['epochs']}" in info["train"]
    assert info["params digest"] == json.loads(reproduced.read("logs/train.json"))["params_digest"]
    assert info["test accuracy"].startswith(f"{metrics['test_accuracy']:.4f}")


def test_the_page_loads_only_its_own_files_so_it_works_offline(server):
    status, headers, page = server.request("GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="(?!data:)([^"]+)"', page.decode())
    assert sorted(assets) == ["draw.css", "draw.js"]
    for text in [page, *(server.request("GET", f"/{asset}")[2] for asset in assets)]:
        assert not re.search(rb"https?:|//[a-z0-9.-]+\.[a-z]{2,}/", text)


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "status", "named"),
    [
        ("POST", "/api/predict", b"7", "text/plain", 415, "text/plain is not accepted; send one of: image/png"),
        ("POST", "/api/predict", b"7", None, 415, "(none) is not accepted"),
        ("POST", "/api/predict", b"GIF89a, but not really", "image/gif", 400, "not an image"),
        ("POST", "/api/predict", b"", "image/png", 400, "not an image"),
        ("POST", "/api/predict", drawing(ink="white"), "image/png", 422, "no digit found"),
        (
            "POST",
            "/api/predict",
            png_header(10_000, 10_000),
            "image/png",
            413,
            "10000x10000 = 100,000,000 pixels, more than the limit",
        ),
        (
            "POST",
            "/api/predict",
            png_header(20_000, 20_000),
            "image/png",
            413,
            "20000x20000 = 400,000,000 pixels, more than the limit",
        ),
        (
            "POST",
            "/api/predict",
            png_header(9400, 9400),
            "image/png",
            413,
            "88,360,000 pixels, more than the limit of 16,",
        ),
        ("POST", "/api/predict", two_page_tiff(), "image/tiff", 400, "the upload is not an image that can be read"),
        ("POST", "/api/predict", drawing("EPS"), "image/png", 400, "read (PNG, JPEG, GIF, WebP, BMP or TIFF)"),
        ("POST", "/api/predict", nan_tiff(), "image/tiff", 400, "has pixels that are not numbers (NaN"),
        ("GET", "/nowhere", None, None, 404, "no such path /nowhere; try GET /"),
        ("GET", "/api/predict", None, None, 405, "GET /api/predict is not allowed; use POST"),
        ("POST", "/api/model", b"{}", "application/json", 405, "use GET"),
        ("DELETE", "/", None, None, 405, "use GET"),
    ],
    ids=[
        "wrong-type",
        "no-type",
        "not-an-image",
        "empty",
        "blank-canvas",
        "too-many-pixels",
        "pixel-bomb",
        "pixels-of-a-344-KB-png",
        "damaged-tiff",
        "postscript-as-png",
        "nan-tiff",
        "404",
        "405",
        "405-post",
        "405-delete",
    ],
)
def test_a_bad_request_is_a_json_error_naming_it_and_the_server_lives_on(
    server, method, path, body, content_type, status, named
):
    answer_status, _, answer = server.request(method, path, body, content_type)
    assert (answer_status, list(answer)) == (status, ["error"]) and named in answer["error"]
    assert server.process.poll() is None


@pytest.mark.parametrize(
    ("headers", "status", "named"),
    [
        ("Content-Length: 3000000", 413, "the upload is 3,000,000 bytes, over the limit of 2,000,000"),
        ("Content-Length: 3000000\nExpect: 100-continue", 413, "over the limit"),
        ("Transfer-Encoding: chunked", 411, "send Content-Length"),
    ],
    ids=["too-large", "too-large-expect-100", "chunked"],
)
def test_an_upload_is_refused_by_its_declared_size_before_its_body_is_sent(server, headers, status, named):
    answer_status, answer = server.raw(
        f"POST /api/predict HTTP/1.1\nHost: localhost\nContent-Type: image/png\n{headers}\n"
    )
    assert answer_status == status and named in answer["error"]


@pytest.mark.parametrize(
    ("host", "origin", "named"),
    [
        ("attacker.example", None, "Host 'attacker.example' is not this server: use 127.0.0.1 or localhost"),
        ("attacker.example:{port}", None, "is not this server"),
        ("localhost:{port}", "http://attacker.example:{port}", "Origin 'http://attacker.example:{port}' is not"),
        ("localhost:{port}", "http://localhost:1", "is not this server's page (http://localhost:{port})"),
        ("localhost:{port}", "null", "Origin 'null' is not"),
    ],
    ids=["rebound-name", "rebound-name-and-port", "cross-origin", "other-port", "sandboxed-page"],
)
def test_a_request_for_another_host_or_from_another_sites_page_is_forbidden(server, host, origin, named):
    """DNS rebinding: a page of attacker.example, its name then pointed at 127.0.0.1, reads the API."""
    port = server.address[1]
    headers = {"Host": host.format(port=port)} | ({"Origin": origin.format(port=port)} if origin else {})
    for method, path, body in [("GET", "/", None), ("GET", "/api/model", None), ("POST", "/api/predict", drawing())]:
        status, _, answer = server.request(method, path, body, "image/png" if body else None, **headers)
        assert (status, list(answer)) == (403, ["error"]) and named.format(port=port) in answer["error"]


@pytest.mark.parametrize(
    ("host", "origin"),
    [("127.0.0.1:{port}", "http://127.0.0.1:{port}"), ("localhost:{port}", None), ("[::1]", None), ("LOCALHOST", None)],
)
def test_the_page_and_scripts_addressing_the_server_by_its_name_or_address_are_served(server, host, origin):
    port = server.address[1]
    headers = {"Host": host.format(port=port)} | ({"Origin": origin.format(port=port)} if origin else {})
    status, _, answer = server.request("POST", "/api/predict", drawing(), "image/png", **headers)
    assert status == 200 and answer["digit"] == 1


@pytest.mark.parametrize(
    ("head", "named"),
    [
        ("GET /api/model HTTP/1.1\nHost: localhost\nHost: attacker.example", "2 Host headers ['localhost', 'atta"),
        ("GET http://attacker.example/api/model HTTP/1.1\nHost: localhost", "names another server than Host 'loc"),
        ("GET https://localhost/api/model HTTP/1.1\nHost: localhost", "names another server than Host 'localhost'"),
        ("GET http://[::1/api/model HTTP/1.1\nHost: localhost", "names another server"),  # was a traceback
    ],
    ids=["two-hosts", "absolute-form-of-another-host", "absolute-form-of-another-scheme", "not-a-url"],
)
def test_a_second_host_or_another_server_in_the_request_line_is_a_bad_request(server, head, named):
    """What no browser sends, but a script can: the server must not read one name and a proxy another."""
    status, answer = server.raw(f"{head}\nConnection: close\n")
    assert status == 400 and named in answer["error"]
    port = server.address[1]
    status, answer = server.raw(
        f"GET http://localhost:{port}/api/model HTTP/1.1\nHost: localhost:{port}\nConnection: close\n"
    )
    assert status == 200 and "sha256" in answer  # the absolute form of this server's own name is served


def test_a_request_without_host_is_forbidden(server):
    status, answer = server.raw("GET /api/model HTTP/1.1\nConnection: close\n")
    assert status == 403 and answer["error"].startswith("Host '' is not this server")


def test_a_burst_of_50_uploads_at_once_is_answered_in_full(server):
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda _: server.request("POST", "/api/predict", drawing(), "image/png"), range(50)))
    assert [(status, answer["digit"]) for status, _, answer in answers] == [(200, 1)] * 50


def test_a_client_that_disconnects_is_one_line_in_the_log_not_a_traceback(server):
    def drops() -> int:
        return server.log.read_text().count("dropped the connection")

    before = drops()
    for _ in range(3):  # half a body, then a reset: the server's read of the rest fails
        with socket.create_connection(server.address, timeout=10) as connection:
            connection.sendall(b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\n"
                               b"Content-Length: 1000\r\n\r\n" + drawing()[:10])  # fmt: skip
            time.sleep(0.05)  # the server is now waiting for the rest
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    for _ in range(100):
        if drops() >= before + 3:
            break
        time.sleep(0.05)
    log = server.log.read_text()
    assert drops() == before + 3 and "Traceback" not in log, log
    assert server.request("GET", "/api/model")[0] == 200


def test_at_most_two_uploads_are_decoded_at_once_the_rest_wait_their_turn(monkeypatch):
    """Each decoded upload may take the memory of ``MAX_PIXELS`` pixels: their number is what bounds it."""
    decoding, most, lock = [0], [0], threading.Lock()

    def slow_decode(body: bytes, max_pixels: int) -> torch.Tensor:
        with lock:
            decoding[0] += 1
            most[0] = max(most[0], decoding[0])
        time.sleep(0.2)
        with lock:
            decoding[0] -= 1
        return load_digit(body, max_pixels)

    monkeypatch.setattr(draw_server, "load_digit", slow_decode)
    model = torch.nn.Linear(784, 10)
    server = draw_server.DrawServer(("127.0.0.1", 0), model, torch.device("cpu"), {}, draw_server.MAX_UPLOAD)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = Server(None, f"http://127.0.0.1:{server.server_address[1]}/", Path(), Path())
        with ThreadPoolExecutor(6) as pool:
            statuses = list(
                pool.map(lambda _: client.request("POST", "/api/predict", drawing(), "image/png")[0], range(6))
            )
    finally:
        server.shutdown()
        server.server_close()
    assert statuses == [200] * 6 and most[0] == draw_server.DECODES == 2


def test_serving_writes_no_file(server):
    def files() -> dict[str, tuple[int, int]]:
        return {str(path): (path.stat().st_mtime_ns, path.stat().st_size) for path in server.root.rglob("*")}

    before = files()
    for body in (drawing(), drawing(ink="white"), png_header(20_000, 20_000), b"junk"):
        server.request("POST", "/api/predict", body, "image/png")
    assert files() == before


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--model", "models/none.pt"], "error: models/none.pt not found: train a model first (dvc repro train)"),
        (["--port", "{port}"], "error: cannot serve on 127.0.0.1:{port}: Address already in use"),
    ],
    ids=["no-model", "port-in-use"],
)
def test_a_command_that_cannot_serve_says_why_in_one_line(server, reproduced, args, error, in_process):
    port = str(server.address[1])
    code, out, err = in_process(reproduced, "draw", *(arg.format(port=port) for arg in args))
    assert (code, out, err) == (2, "", error.format(port=port) + "\n")


@contextmanager
def chromium():
    """Debian's headless Chromium, driven by its own chromedriver (same build, so always matched)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory() as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        try:
            yield driver
        finally:
            driver.quit()


def draw(url: str, digit: str, screenshot: Path) -> dict:
    """Draws ``STROKES[digit]`` on the page with the mouse's pointer events, waits (5 s at most) for
    the page to read it as ``digit``, saves a screenshot; returns what the page then shows."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with chromium() as driver:
        driver.get(url)
        WebDriverWait(driver, 5).until(lambda _: driver.find_elements(By.CSS_SELECTOR, "#model td"))
        pad, actions = driver.find_element(By.ID, "pad"), ActionChains(driver, duration=20)
        for points in STROKES[digit]:
            actions.move_to_element_with_offset(pad, *points[0]).click_and_hold()
            for (x0, y0), (x1, y1) in pairwise(points):
                steps = max(abs(x1 - x0), abs(y1 - y0)) // 20 + 1  # a pointermove every 20 px or so
                for step in range(1, steps + 1):
                    actions.move_to_element_with_offset(
                        pad, x0 + (x1 - x0) * step // steps, y0 + (y1 - y0) * step // steps
                    )
            actions.release()
        actions.perform()
        try:
            WebDriverWait(driver, 5).until(lambda _: driver.find_element(By.ID, "digit").text == digit)
        except TimeoutException:
            pass  # the caller's assertions show what the page read instead
        driver.save_screenshot(str(screenshot))
        return {
            "digit": driver.find_element(By.ID, "digit").text,
            "bars": [row.text.split("\n") for row in driver.find_elements(By.CSS_SELECTOR, "#bars li")],
            "bar_widths": [fill.size["width"] for fill in driver.find_elements(By.CSS_SELECTOR, "#bars .fill")],
            "seen_ink": driver.execute_script(
                "return document.getElementById('seen').getContext('2d')"
                ".getImageData(0, 0, 28, 28).data.filter((_, i) => i % 4 === 0).reduce((a, b) => a + b, 0)"
            ),
            "model": driver.find_element(By.ID, "model").text,
        }


def test_a_stroke_drawn_in_a_browser_shows_one_ten_bars_and_the_image_the_model_saw(server, reproduced, tmp_path):
    page = draw(server.url, "1", tmp_path / "draw.png")
    assert page["digit"] == "1"
    assert [bar[0] for bar in page["bars"]] == [str(digit) for digit in range(10)]
    percents = [float(bar[1].rstrip("%")) for bar in page["bars"]]
    assert max(percents) == percents[1] and abs(sum(percents) - 100) < 1
    assert max(page["bar_widths"]) == page["bar_widths"][1] > 0
    assert page["seen_ink"] > 0 and reproduced.params()["arch"] in page["model"]
    assert (tmp_path / "draw.png").read_bytes().startswith(b"\x89PNG")


if __name__ == "__main__":
    print(draw(sys.argv[1], sys.argv[3] if len(sys.argv) > 3 else "7", Path(sys.argv[2])))
