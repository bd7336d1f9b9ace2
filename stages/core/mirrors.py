"""Fetching the MNIST files from a list of mirrors, verified by the SHA-256 of their content."""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from stages.core import atomic
from stages.core.errors import PipelineError

MIRRORS_ENV = "MNIST_MIRRORS"
TIMEOUT_SECONDS = 60


def mirrors_to_try(defaults: Sequence[str], environ: Mapping[str, str] = os.environ) -> list[str]:
    """``MNIST_MIRRORS`` (comma-separated base URLs) first, then the params' mirrors; each with a
    trailing slash so a file name can be appended."""
    from_env = [url.strip() for url in environ.get(MIRRORS_ENV, "").split(",") if url.strip()]
    for url in from_env:
        if not url.startswith(("http://", "https://", "file://")):
            raise PipelineError(
                f"{MIRRORS_ENV} entry {url!r} is not a URL; use http://, https:// or file:// base URLs, "
                "comma-separated"
            )
    return [url if url.endswith("/") else url + "/" for url in [*from_env, *defaults]]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_verified(name: str, expected_sha256: str, mirrors: Sequence[str]) -> bytes:
    """The decompressed content of ``<mirror><name>.gz`` from the first mirror whose content has the
    expected SHA-256. The gzip wrapper differs between mirrors; the content must not."""
    failures = []
    for mirror in mirrors:
        url = f"{mirror}{name}.gz"
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
                content = gzip.decompress(response.read())
        except (OSError, EOFError, zlib.error, ValueError) as error:
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


def download_all(checksums: Mapping[str, str], mirrors: Sequence[str], out_dir: Path) -> None:
    """Write each verified file to ``out_dir`` in one rename; a file already there with the right
    content is kept."""
    for name, expected in checksums.items():
        target = out_dir / name
        if target.exists() and sha256(target.read_bytes()) == expected:
            print(f"{name}: already present and verified")
            continue
        content = fetch_verified(name, expected, mirrors)
        atomic.write_bytes(target, content)
        print(f"{name}: {len(content):,} bytes, SHA-256 verified")


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"unreachable ({error.reason})"
    if isinstance(error, (EOFError, zlib.error, gzip.BadGzipFile)):
        return f"not a complete gzip file ({error or type(error).__name__})"
    return f"{type(error).__name__}: {error}"
