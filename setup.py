"""Build of the compiled data plane (`twamp.dataplane`); all metadata lives in pyproject.toml.

Two extension modules, the compiled twins: `twamp.dataplane.reflector.compiled` and
`twamp.dataplane.sender.compiled` (their shared declarations are the .pxd files of
src/twamp/dataplane/, the libcrypto shim is _libcrypto.h there).

Environment switches:
  TWAMP_PURE_PYTHON=1        pure-Python build: the extensions are not even attempted (the same
                             switch makes an installed build run its pure twins, see
                             twamp.dataplane).
  TWAMP_REQUIRE_EXTENSION=1  a failed compile fails the build (releases, CI), so a silent
                             fallback to the pure twin never ships.
  TWAMP_DEBUG_BUILD=1        -O0 -g3, assertions on.
Otherwise a failed compile prints a clear warning and the pure-Python twin is used.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

PURE_PYTHON = os.environ.get("TWAMP_PURE_PYTHON", "") not in ("", "0")
REQUIRE_EXTENSION = os.environ.get("TWAMP_REQUIRE_EXTENSION") == "1"
DEBUG = os.environ.get("TWAMP_DEBUG_BUILD") == "1"


class OptionalBuildExt(build_ext):
    """`Extension(optional=True)` is lost through cythonize(), so the fallback is done here."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            self._fallback(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._fallback(exc)

    def _fallback(self, exc: Exception) -> None:
        if REQUIRE_EXTENSION:
            raise
        print(
            "\n*** WARNING: the twamp data plane (twamp.dataplane) could not be compiled:\n"
            f"***   {exc}\n"
            "*** twamp will run on its pure-Python twin, at a fraction of the speed.\n"
            "*** Install a C compiler and the Python headers, then reinstall.\n",
            file=sys.stderr,
        )


def extensions() -> list[Extension]:
    if PURE_PYTHON:
        print("*** TWAMP_PURE_PYTHON=1: pure-Python build ***", file=sys.stderr)
        return []
    try:
        from Cython.Build import cythonize
    except ImportError as exc:
        if REQUIRE_EXTENSION:
            raise
        print(f"*** WARNING: Cython is missing ({exc}); pure-Python build ***", file=sys.stderr)
        return []
    cflags = ["-O0", "-g3", "-UNDEBUG"] if DEBUG else ["-O2"]
    exts = [
        Extension(
            f"twamp.dataplane.{twin}.compiled",
            [f"src/twamp/dataplane/{twin}/compiled.pyx"],
            include_dirs=["src/twamp/dataplane"],  # _libcrypto.h
            extra_compile_args=cflags,
            define_macros=[("_GNU_SOURCE", "1")],
            # dlopen() of libcrypto (_libcrypto.h) lives in libdl before glibc 2.34 (a stub
            # after): keep it NEEDED even where libc alone satisfies the link, for older
            # distributions.
            extra_link_args=["-Wl,--no-as-needed", "-l:libdl.so.2", "-Wl,--as-needed"],
        )
        for twin in ("reflector", "sender")
    ]
    try:
        return list(
            cythonize(
                exts,
                include_path=["src"],
                compiler_directives={
                    "language_level": "3",
                    "boundscheck": False,
                    "wraparound": False,
                },
                quiet=True,
            )
        )
    except Exception as exc:
        if REQUIRE_EXTENSION:
            raise
        print(f"*** WARNING: Cython failed ({exc}); pure-Python build ***", file=sys.stderr)
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
