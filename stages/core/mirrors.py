"""Fetching the MNIST files from a list of mirrors, verified by the SHA-256 of their content."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, BinaryIO

from pydantic import StringConstraints

from stages.core import atomic
from stages.core.errors import PipelineError
from stages.core.schema import Text, read_yaml, said, typed, validate

MNIST_FILES = {  # data/mnist.yaml's key -> the file's name on the mirrors (without .gz)
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MIRRORS_ENV = "MNIST_MIRRORS"
TIMEOUT_SECONDS = 60
MNIST_SIZES = {  # decompressed bytes of each of MNIST_FILES: a response is never read past these
    "train-images-idx3-ubyte": 47_040_016,
    "train-labels-idx1-ubyte": 60_008,
    "t10k-images-idx3-ubyte": 7_840_016,
    "t10k-labels-idx1-ubyte": 10_008,
}


Sha256 = said(
    Annotated[str, StringConstraints(strict=True, pattern="^[0-9a-fA-F]{64}$", to_lower=True)],
    "expected a SHA-256 as 64 hex digits",
)


@typed
class Checksums:  # one for each of MNIST_FILES
    train_images: Sha256
    train_labels: Sha256
    test_images: Sha256
    test_labels: Sha256


@typed
class Source:
    """data/mnist.yaml: where the download stage fetches MNIST from, and what each file must hold."""

    sha256: Checksums
    mirrors: tuple[Text, ...]

    @property
    def files(self) -> dict[str, str]:
        """Each file's SHA-256, keyed by its name on the mirrors (train-images-idx3-ubyte)."""
        return {MNIST_FILES[key]: value for key, value in asdict(self.sha256).items()}


def load_source(path: str | Path) -> Source:
    return validate(Source, read_yaml(Path(path)), str(path))


class NotMnist(Exception):
    """A response larger than the MNIST file it stands for: a wrong file, or a gzip bomb."""


def mirrors_to_try(defaults: Sequence[str], environ: Mapping[str, str] = os.environ) -> list[str]:
    """``MNIST_MIRRORS`` (comma-separated base URLs) first, then data/mnist.yaml's; each ending in a slash."""
    from_env = [url.strip() for url in environ.get(MIRRORS_ENV, "").split(",") if url.strip()]
    for url in from_env:
        if not url.startswith(("http://", "https://", "file://")):
            raise PipelineError(
                f"{MIRRORS_ENV} entry {url!r} is not a URL; use http://, https:// or file:// base URLs, comma-separated"
            )
    return [url if url.endswith("/") else url + "/" for url in [*from_env, *defaults]]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_verified(name: str, expected_sha256: str, mirrors: Sequence[str]) -> bytes:
    """The decompressed ``<mirror><name>.gz`` of the first mirror whose content (not its gzip wrapper,
    which differs between mirrors) has the expected SHA-256."""
    failures = []
    for mirror in mirrors:
        url = f"{mirror}{name}.gz"
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
                content = gunzip_bounded(response, MNIST_SIZES[name])
        except (OSError, EOFError, zlib.error, ValueError, NotMnist) as error:
            failures.append(f"{url}: {_reason(error)}")
            continue
        actual = sha256(content)
        if actual == expected_sha256:
            return content
        failures.append(f"{url}: SHA-256 of the content is {actual}, expected {expected_sha256}")
    tried = "\n".join(f"  {failure}" for failure in failures)
    raise PipelineError(
        f"could not fetch a verified {name} from any mirror; tried:\n{tried}\n"
        f"Set {MIRRORS_ENV} to base URLs that hold {name}.gz, e.g. "
        f"{MIRRORS_ENV}=file:///path/to/mnist/ or {MIRRORS_ENV}=https://host/mnist/,https://other/mnist/"
    )


def gunzip_bounded(stream: BinaryIO, size: int) -> bytes:
    """The content of a gzip ``stream``, given up on past ``size`` bytes, or past twice that read (more than
    any gzip wrapper of ``size`` bytes needs, even stored uncompressed)."""
    compressed = stream.read(2 * size + 1)
    if len(compressed) > 2 * size:
        raise NotMnist(f"more than {2 * size:,} bytes of gzip for MNIST's {size:,}: not the MNIST file")
    content = gzip.GzipFile(fileobj=io.BytesIO(compressed)).read(size + 1)  # decompressed no further
    if len(content) > size:
        raise NotMnist(f"larger than MNIST's {size:,} bytes: not the MNIST file")
    return content


def download_all(
    checksums: Mapping[str, str],
    mirrors: Sequence[str],
    out_dir: Path,
    before_writing: Callable[[], None] = lambda: None,
) -> None:
    """Fetch and verify every file that ``out_dir`` lacks or holds otherwise, then replace them together
    (``before_writing`` may still refuse): when any fails, ``out_dir`` stays as it was."""
    fetched = {}
    for name, expected in checksums.items():
        target = out_dir / name
        if target.exists() and sha256(target.read_bytes()) == expected:
            print(f"{name}: already present and verified")
        else:
            fetched[target] = fetch_verified(name, expected, mirrors)
    with atomic.Outputs() as outputs:
        for path, content in fetched.items():
            outputs.bytes(path, content)
        before_writing()
    for target, content in fetched.items():
        print(f"{target.name}: {len(content):,} bytes, SHA-256 verified")


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"unreachable ({error.reason})"
    if isinstance(error, NotMnist):
        return str(error)
    if isinstance(error, (EOFError, zlib.error)):
        return f"not a complete gzip file ({error or type(error).__name__})"
    return f"{type(error).__name__}: {error}"
