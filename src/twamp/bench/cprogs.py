"""The C reference programs that ship inside the package, built on first use.

`csrc/c_reflector.c` is a minimal TWAMP Light reflector (recvmmsg/sendmmsg, kernel receive
timestamps): the yardstick `twamp-bench compare -r c` measures our reflectors against.
`csrc/c_sender.c` is a C load generator with the same pacing and records as our Sender, for
`twamp-bench --sender c`: a sender that is not Python at all, so that what limits a run on a
small machine can be told apart.

They ship as source (a wheel cannot carry binaries for every machine's libc, and they are tiny)
and are compiled with the system compiler (`$CC`, else cc or gcc, `-O2`) into a cache
directory, `$XDG_CACHE_HOME/twamp/bench` (`~/.cache/twamp/bench`), under a name holding a hash
of the source, the flags and the compiler, so an upgrade rebuilds and concurrent runs share a
binary. The hash covers the headers the source includes (`Program.headers`: `bench_common.h`,
the signal, clock and socket setup both programs share), so a change to a header rebuilds too.
The binary is written under a temporary name and renamed into place, so a half-written
file is never run. Without a compiler the error says so in one sentence and what to install.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = [
    "PROGRAMS",
    "BuildError",
    "Program",
    "build",
    "cache_dir",
    "compiler",
    "headers",
    "source",
]

_FLAGS = ("-O2", "-Wall")


class BuildError(Exception):
    """The program cannot be built here; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Program:
    name: str
    source: str
    libs: tuple[str, ...] = ()
    defines: tuple[str, ...] = ()
    headers: tuple[str, ...] = ("bench_common.h",)
    """Files of csrc/ the source includes: copied beside it and hashed with it."""


PROGRAMS = {
    "c_reflector": Program("c_reflector", "c_reflector.c"),
    "c_sender": Program("c_sender", "c_sender.c", libs=("-lm",)),
    # With OpenSSL's libcrypto: authenticated and encrypted test packets (needs libssl-dev).
    "c_sender_ssl": Program(
        "c_sender", "c_sender.c", libs=("-lcrypto", "-lm"), defines=("-DHAVE_OPENSSL",)
    ),
}


def _csrc(filename: str) -> str:
    return resources.files("twamp.bench").joinpath("csrc").joinpath(filename).read_text()


def source(name: str) -> str:
    """The C source text of a program, read from the installed package."""
    return _csrc(PROGRAMS[name].source)


def headers(name: str) -> dict[str, str]:
    """The headers a program includes: file name -> text, read from the installed package."""
    return {h: _csrc(h) for h in PROGRAMS[name].headers}


def compiler() -> str | None:
    """$CC if set, else cc or gcc on PATH."""
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc) or cc
    return shutil.which("cc") or shutil.which("gcc")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "twamp" / "bench"


def _version(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (out.stdout or "").splitlines()[0] if out.stdout else ""


def build(name: str) -> Path:
    """The built program `name` (see PROGRAMS), compiling it if the cache lacks it."""
    program = PROGRAMS[name]
    cc = compiler()
    if cc is None:
        raise BuildError(
            f"{name} is built from C source on first use and needs a C compiler: "
            "install gcc (Debian/Ubuntu: apt-get install gcc libc6-dev) or set $CC"
        )
    text = source(name)
    included = headers(name)
    args = (*_FLAGS, *program.defines)
    parts = (text, *(f"{h}\0{t}" for h, t in sorted(included.items())), *args, *program.libs)
    key = hashlib.sha256("\0".join((*parts, _version(cc))).encode())
    out_dir = cache_dir()
    binary = out_dir / f"{program.name}-{key.hexdigest()[:16]}"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(f"cannot create the cache directory {out_dir}: {exc.strerror}") from None
    with tempfile.TemporaryDirectory(prefix="twamp-cbuild-") as tmp:
        src = Path(tmp) / program.source
        src.write_text(text)
        for header, header_text in included.items():
            (Path(tmp) / header).write_text(header_text)
        tmp_bin = out_dir / f".{binary.name}.{os.getpid()}"
        cmd = [cc, *args, "-o", str(tmp_bin), str(src), *program.libs]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BuildError(f"cannot run the C compiler {cc}: {exc}") from None
        if result.returncode != 0:
            with contextlib.suppress(OSError):
                tmp_bin.unlink()
            lines = (result.stderr or result.stdout).strip().splitlines()
            last = lines[-1] if lines else f"exit status {result.returncode}"
            raise BuildError(f"{cc} could not build {name}: {last}")
        os.replace(tmp_bin, binary)
    return binary
