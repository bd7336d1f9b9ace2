"""Draw a digit in the browser and see what the trained model thinks, as you draw.

Not a DVC stage but a command, run from the project root after ``dvc repro``:

    python -m stages draw [--port 8000] [--host 127.0.0.1]

It serves one page (stages/draw_page/, no external resources) and a JSON API for scripts:

    POST /api/predict   an image body (PNG, JPEG, GIF, WebP, BMP or TIFF): what one element of
                        ``predict --json`` gives, plus every class's probability and the 28x28
                        image the model saw
    GET  /api/model     which model is loaded: architecture, params, the model file's SHA-256

Images are decoded in memory and preprocessed as ``predict`` does; nothing is ever written.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import torch
from torch import nn

from stages.core import data, models, runtime
from stages.core.errors import PipelineError, run_stage
from stages.core.params import load_params
from stages.core.preprocess import ImageTooLarge, UnreadableImage, load_digit
from stages.core.training import probabilities
from stages.predict import Prediction

PAGE = Path(__file__).with_name("draw_page")
PAGE_FILES = {  # URL path -> (file in PAGE, Content-Type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/draw.css": ("draw.css", "text/css; charset=utf-8"),
    "/draw.js": ("draw.js", "text/javascript; charset=utf-8"),
}
IMAGE_TYPES = (
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/bmp",
    "image/tiff",
    "application/octet-stream",
)
MAX_UPLOAD = 2_000_000
MAX_PIXELS = 4096 * 4096
"""Decoded per upload at most: a drawing, a screenshot or a 12-megapixel photo (docs/predict.md has the
memory it takes); a small compressed file of more is refused before it is decoded."""
DECODES = 2
"""Uploads decoded at once, by as many threads of their own, the others waiting their turn: more would
add memory, not speed, on 2 cores; and memory a decoding thread frees stays with that thread's
allocator (glibc's arenas), so decoding in every request's own thread would hold it many times over."""
ERROR_STATUS = {UnreadableImage: HTTPStatus.BAD_REQUEST, ImageTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE}
"""Other image errors (no ink, an animation) are 422: a readable image that holds no one digit."""
LOG, METRICS = Path("logs/evaluate.json"), Path("metrics/evaluate.json")


def load_for_serving(
    params_path: str | Path, model_path: Path, log_path: Path = LOG, metrics_path: Path = METRICS
) -> tuple[nn.Module, torch.device, dict[str, str]]:
    """The model, its device, and what the page shows about it: the run it came from, as the
    model file carries it, and its test accuracy where evaluate tested this very file."""
    params = load_params(params_path)
    device = runtime.configure(params.threads, params.device, params.numerics)
    recipe = params.recipe()
    trained = models.load_for(model_path, device, recipe.architecture, recipe.digest, params.source)
    run = trained.run
    architecture = ", ".join(f"{key} {value}" for key, value in run["architecture"].items())
    info = {
        "model": str(model_path),
        "sha256": trained.sha256,
        "params digest": trained.params_digest,
        "arch": f"{run['arch']} ({architecture})",
        "optimizer": ", ".join(f"{key} {value}" for key, value in run["optimizer"].items()),
        "schedule": ", ".join(f"{key} {value}" for key, value in run["schedule"].items()),
        "train": ", ".join(f"{key} {value}" for key, value in run["train"].items()),
        "seed": str(run["seed"]),
        "device": str(device),
    }
    if log_path.exists() and json.loads(log_path.read_text()).get("model_sha256") == trained.sha256:
        info["test accuracy"] = f"{json.loads(metrics_path.read_text())['test_accuracy']:.4f} ({metrics_path})"
    return trained.model, device, info


def split_target(target: str) -> tuple[str | None, str]:
    """A request line's target as the server it names (``http://HOST``, None where it names none) and
    the path: the usual origin form is the path alone, the absolute form (sent to proxies) a URL."""
    if target.startswith("/"):
        return None, target.partition("?")[0]
    try:
        parts = urlsplit(target)
    except ValueError:  # not a URL either (an unclosed IPv6 bracket)
        return target, ""
    return f"{parts.scheme}://{parts.netloc}", parts.path or "/"


class RequestError(Exception):
    """A bad request, answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class DrawServer(ThreadingHTTPServer):
    request_queue_size = 128  # connections waiting to be accepted: a burst from one page's users, not reset

    def __init__(self, address, model: nn.Module, device: torch.device, info: dict[str, str], max_upload: int,
                 max_pixels: int = MAX_PIXELS):  # fmt: skip
        self.decoder = ThreadPoolExecutor(DECODES, "decode")  # before binding, which closes the server on failure
        super().__init__(address, DrawHandler)
        self.model, self.device, self.info = model, device, info
        self.max_upload, self.max_pixels = max_upload, max_pixels
        self.names = {address[0].lower(), "localhost"}
        self.files = {path: ((PAGE / name).read_bytes(), kind) for path, (name, kind) in PAGE_FILES.items()}

    def serves(self, host: str) -> bool:
        """Whether a Host header (port and all) names this server."""
        try:
            name = urlsplit(f"//{host}").hostname or ""
            return name in self.names or bool(ipaddress.ip_address(name))
        except ValueError:  # not an IP address, or not a host at all
            return False

    def server_close(self) -> None:
        super().server_close()
        self.decoder.shutdown()

    def handle_error(self, request, client_address) -> None:
        """A client gone before its answer is one line; anything else is a bug, shown with its traceback."""
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError)):
            return super().handle_error(request, client_address)
        print(f"{client_address[0]} - - dropped the connection ({type(error).__name__})", file=sys.stderr)


class DrawHandler(BaseHTTPRequestHandler):
    server: DrawServer
    protocol_version = "HTTP/1.1"  # keep-alive for the page's stream of predictions
    timeout = 30  # seconds a client may stay silent before its connection is dropped

    def route(self) -> None:
        routes = {"/api/predict": {"POST": self.predict}, "/api/model": {"GET": self.model_info}}
        routes.update({page: {"GET": partial(self.page_file, page)} for page in self.server.files})
        try:
            path = self.check_addressed()
            if path not in routes:
                raise RequestError(
                    HTTPStatus.NOT_FOUND, f"no such path {path}; try GET /, GET /api/model or POST /api/predict"
                )
            methods = routes[path]
            method = "GET" if self.command == "HEAD" else self.command  # HEAD: GET's headers, no body
            if method not in methods:
                allowed = ", ".join(methods)
                raise RequestError(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    f"{self.command} {path} is not allowed; use {allowed}",
                    {"Allow": allowed},
                )
            methods[method]()
        except RequestError as error:
            self.fail(error)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = route

    def handle_expect_100(self) -> bool:
        """Refuses an oversized upload before the client sends it (curl asks first above 1 MB)."""
        try:
            self.check_addressed()
            self.upload_length()
        except RequestError as error:
            self.fail(error)
            return False
        return super().handle_expect_100()

    def check_addressed(self) -> str:
        """The path asked for, of a request for this server by a name it listens on (an IP address needs no
        DNS), so a site whose name an attacker's DNS points here is refused (DNS rebinding); and only posts
        from its own page. One Host header, and a request line naming a server (absolute form) names it."""
        hosts, origin = self.headers.get_all("Host", []), self.headers.get("Origin")
        if len(hosts) > 1:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"{len(hosts)} Host headers {hosts}: send one")
        host, (named, path) = (hosts or [""])[0], split_target(self.path)
        if named is not None and named.lower() != f"http://{host}".lower():
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"{self.command} {self.path} names another server than Host {host!r}: send the path alone",
            )
        if not self.server.serves(host):
            names = " or ".join(sorted(self.server.names))
            raise RequestError(HTTPStatus.FORBIDDEN, f"Host {host!r} is not this server: use {names} or an IP address")
        if origin is not None and origin != f"http://{host}":
            raise RequestError(HTTPStatus.FORBIDDEN, f"Origin {origin!r} is not this server's page (http://{host})")
        return path

    def page_file(self, path: str) -> None:
        content, kind = self.server.files[path]
        self.send(HTTPStatus.OK, content, kind)

    def model_info(self) -> None:
        self.send_json(HTTPStatus.OK, self.server.info)

    def predict(self) -> None:
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind not in IMAGE_TYPES:
            raise RequestError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"Content-Type {kind or '(none)'} is not accepted; send one of: {', '.join(IMAGE_TYPES)}",
            )
        length = self.upload_length()
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            raise RequestError(HTTPStatus.REQUEST_TIMEOUT, f"the body did not arrive within {self.timeout} s") from None
        if len(body) < length:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"the body ended after {len(body):,} of {length:,} bytes")
        try:
            digit = self.server.decoder.submit(load_digit, body, self.server.max_pixels).result()
        except PipelineError as error:
            raise RequestError(ERROR_STATUS.get(type(error), HTTPStatus.UNPROCESSABLE_ENTITY), str(error)) from None
        with torch.inference_mode():
            probs = probabilities(self.server.model, data.as_features(digit[None], self.server.device))[0]
        prediction = asdict(Prediction.from_probabilities("upload", probs, None))
        self.send_json(HTTPStatus.OK, {**prediction, "probabilities": probs.tolist(), "image": digit.tolist()})

    def upload_length(self) -> int:
        """Content-Length, checked against the limit before a byte of the body is read."""
        declared = self.headers.get("Content-Length")
        if declared is None:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send Content-Length; chunked uploads are not accepted")
        if not (declared.isascii() and declared.isdigit()):
            raise RequestError(HTTPStatus.BAD_REQUEST, f"Content-Length {declared!r} is not a number of bytes")
        if int(declared) > self.server.max_upload:
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the upload is {int(declared):,} bytes, over the limit of {self.server.max_upload:,} (--max-upload)",
            )
        return int(declared)

    def fail(self, error: RequestError) -> None:
        self.close_connection = True  # the request's body may be unread: the connection cannot be reused
        self.send_json(error.status, {"error": error.message}, error.headers)

    def send_json(self, status: HTTPStatus, content: dict, headers: dict[str, str] | None = None) -> None:
        self.send(status, json.dumps(content).encode(), "application/json", headers)

    def send(self, status: HTTPStatus, content: bytes, kind: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": kind, "Content-Length": str(len(content)), **(headers or {})}.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

    def log_request(self, code="-", size="-") -> None:
        """Only failures: a line per stroke would bury them."""
        if isinstance(code, int) and code >= 400:
            super().log_request(code, size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port (the URL is printed)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--max-upload", type=int, default=MAX_UPLOAD, help="largest image accepted, in bytes")
    parser.add_argument(
        "--max-pixels", type=int, default=MAX_PIXELS, help=f"largest image decoded, in pixels (default {MAX_PIXELS:,})"
    )
    args = parser.parse_args()
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port} is not a port: choose 0 (any free port) to 65535")
    if args.max_upload < 1 or args.max_pixels < 1:
        parser.error(f"--max-upload {args.max_upload} and --max-pixels {args.max_pixels} must be >= 1")

    model, device, info = load_for_serving(args.params, args.model)
    try:
        server = DrawServer((args.host, args.port), model, device, info, args.max_upload, args.max_pixels)
    except OSError as error:
        raise PipelineError(f"cannot serve on {args.host}:{args.port}: {error.strerror or error}") from None
    host, port = server.server_address[:2]
    print(f"serving {args.model} ({info['arch']}) on http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    run_stage(main)
