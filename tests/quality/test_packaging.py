"""The package as a user gets it: ``python -m build`` makes an sdist and a wheel that
``twine check`` accepts; the wheel, installed in a fresh virtual environment, imports with
only anyio and asgiref (and what they need); each extra names what its feature needs; the
version is in one place, and the changelog has it."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import asgi_stream

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

# What each extra must bring: the distributions its feature imports.
EXTRAS = {
    "redis": {"coredis"},
    "quart": {"quart"},
    "django": {"django"},
    "starlette": {"starlette"},
    "fastapi": {"fastapi"},
    "docs": {"mkdocs-material", "mkdocstrings"},
    "demo": {"hypercorn", "httpx"},
    "test": {"pytest", "hypercorn", "uvicorn", "httpx", "httpx-sse", "trio", "coredis"},
}
# anyio and asgiref, and what they themselves require on Python 3.11.
RUNTIME = {"anyio", "asgiref", "idna", "sniffio", "typing-extensions", "asgi-stream"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


def the(built: Path, pattern: str) -> Path:
    (found,) = built.glob(pattern)
    return found


def metadata(wheel: Path) -> Parser:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(archive.read(name).decode())  # type: ignore[return-value]


def normalized(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_sdist_and_wheel_pass_twine_check_with_the_one_version(built: Path) -> None:
    version = asgi_stream.__version__
    wheel = the(built, f"asgi_stream-{version}-py3-none-any.whl")
    sdist = the(built, f"asgi_stream-{version}.tar.gz")
    done = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "asgi_stream/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "examples/"))]
    assert f"## {version}" in (ROOT / "CHANGELOG.md").read_text()


def test_each_extra_brings_what_its_feature_needs(built: Path) -> None:
    meta = metadata(the(built, "*.whl"))
    required = meta.get_all("Requires-Dist") or []  # type: ignore[attr-defined]
    base = {normalized(r) for r in required if "extra ==" not in r}
    assert base == {"anyio", "asgiref"}
    for extra, needs in EXTRAS.items():
        brought = {normalized(r) for r in required if f'extra == "{extra}"' in r}
        assert needs <= brought, (extra, needs - brought)


def test_the_wheel_imports_in_a_fresh_environment_with_only_anyio_and_asgiref(
    built: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(the(built, "*.whl"))],
        check=True,
        timeout=300,
    )
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze", "--exclude", "pip"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    installed = {normalized(line) for line in listed.splitlines() if line.strip()}
    installed -= {"setuptools", "wheel"}  # what some Pythons put in every new venv
    assert installed <= RUNTIME, installed - RUNTIME
    code = (
        "import asgi_stream, asgi_stream.stores, asgi_stream.channels;"
        "from asgi_stream import Channel, Stream, StreamMiddleware;"
        "print(asgi_stream.__version__)"
    )
    done = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == asgi_stream.__version__
    # the Redis store names its extra when coredis is missing
    done = subprocess.run(
        [str(python), "-c", "from asgi_stream import Channel; Channel('redis://127.0.0.1:1')"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode != 0 and "asgi-stream[redis]" in done.stderr
