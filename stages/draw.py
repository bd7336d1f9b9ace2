"""Draw a digit in the browser and see what the trained model thinks, as you draw.

Not a DVC stage but a command, run from the project root after ``dvc repro``:

    python -m stages.draw [--port 8000] [--host 127.0.0.1]

It serves one page (stages/draw_page/, no external resources) and a JSON API for scripts:

    POST /api/predict   an image body (PNG, JPEG, GIF, WebP, ...): what one element of
                        ``predict --json`` gives, plus every class's probability and the 28x28
                        image the model saw
    GET  /api/model     which model is loaded: architecture, params, the model file's SHA-256

Images are decoded in memory and preprocessed as ``predict`` does; nothing is ever written.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
from dataclasses import asdict
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import torch
from PIL import Image
from torch import nn

from stages.core import data, runtime
from stages.core.errors import PipelineError, run_stage
from stages.core.models import load_model
from stages.core.params import load_params
from stages.core.preprocess import to_mnist
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
METRICS = Path("metrics/evaluate.json")


def load_for_serving(
    params_path: str | Path, model_path: Path, metrics_path: Path = METRICS
) -> tuple[nn.Module, torch.device, dict[str, str]]:
    """The model, its device, and what the page shows about it. Today the architecture and the
    training params are params.yaml's, which may have changed since the model was trained."""
    params = load_params(params_path)
    device = runtime.configure(params.seed, params.threads, params.device)
    model = load_model(model_path, params.architecture, device)
    architecture, optimizer = params.architecture, params.optimizer_spec
    with model_path.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    hyperparameters = ", ".join(f"{key}={value}" for key, value in optimizer.hyperparameters.items())
    info = {
        "model": str(model_path),
        "sha256": digest,
        "modified": datetime.fromtimestamp(model_path.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "arch": f"{architecture.name}: {'-'.join(map(str, architecture.layer_sizes))}, {architecture.activation}",
        "optimizer": f"{optimizer.name}: {optimizer.type}, {hyperparameters}",
        "epochs": str(params.train.epochs),
        "batch_size": str(params.train.batch_size),
        "seed": str(params.seed),
        "device": str(device),
    }
    if metrics_path.exists():
        info["test_accuracy"] = f"{json.loads(metrics_path.read_text())['test_accuracy']:.4f} ({metrics_path})"
    return model, device, info


class RequestError(Exception):
    """A bad request, answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def decode_image(body: bytes) -> np.ndarray:
    """An uploaded image as grayscale uint8 ``[H, W]``, transparent parts as white paper (a canvas
    exported with a transparent background then reads as ink on paper)."""
    try:
        with Image.open(io.BytesIO(body)) as image:
            if image.width * image.height > Image.MAX_IMAGE_PIXELS:  # Pillow itself only warns up to twice that
                raise Image.DecompressionBombError(
                    f"{image.width}x{image.height} pixels, over the limit of {Image.MAX_IMAGE_PIXELS:,}"
                )
            rgba = image.convert("RGBA")
    except Image.DecompressionBombError as error:
        raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the image is too large to decode: {error}") from None
    except Exception:  # Pillow's decoders raise many types on corrupt data; none may reach the server
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            "the body is not an image that can be read (PNG, JPEG, GIF, WebP, BMP or TIFF expected)",
        ) from None
    paper = Image.new("RGBA", rgba.size, "white")
    return np.asarray(Image.alpha_composite(paper, rgba).convert("L"))


class DrawServer(ThreadingHTTPServer):
    def __init__(self, address, model: nn.Module, device: torch.device, info: dict[str, str], max_upload: int):
        super().__init__(address, DrawHandler)
        self.model, self.device, self.info, self.max_upload = model, device, info, max_upload
        self.files = {path: ((PAGE / name).read_bytes(), kind) for path, (name, kind) in PAGE_FILES.items()}


class DrawHandler(BaseHTTPRequestHandler):
    server: DrawServer
    protocol_version = "HTTP/1.1"  # keep-alive for the page's stream of predictions
    timeout = 30  # seconds a client may stay silent before its connection is dropped

    def route(self) -> None:
        path = urlsplit(self.path).path
        routes = {"/api/predict": {"POST": self.predict}, "/api/model": {"GET": self.model_info}}
        routes.update({page: {"GET": self.page_file} for page in self.server.files})
        try:
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
            self.upload_length()
        except RequestError as error:
            self.fail(error)
            return False
        return super().handle_expect_100()

    def page_file(self) -> None:
        content, kind = self.server.files[urlsplit(self.path).path]
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
            digit = torch.from_numpy(to_mnist(decode_image(body)))
        except ValueError as error:
            raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, str(error)) from None
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
    args = parser.parse_args()
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port} is not a port: choose 0 (any free port) to 65535")
    if args.max_upload < 1:
        parser.error(f"--max-upload {args.max_upload} must be a number of bytes >= 1")

    model, device, info = load_for_serving(args.params, args.model)
    try:
        server = DrawServer((args.host, args.port), model, device, info, args.max_upload)
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
