"""The lab's one error type: a one-sentence cause and fix, printed by the CLI without traceback."""

from __future__ import annotations

import os
import shutil

__all__ = ["LabError", "check_root", "need_program"]


class LabError(RuntimeError):
    """A lab failure the user can act on; ``str(exc)`` names the cause and the fix."""


def check_root() -> None:
    if os.geteuid() != 0:
        raise LabError(
            "the OSPF lab needs root (network namespaces, raw sockets): run it with sudo or as root"
        )


def need_program(path: str, package: str) -> str:
    found = (
        shutil.which(path)
        if not os.path.isabs(path)
        else (path if os.access(path, os.X_OK) else None)
    )
    if found is None:
        raise LabError(
            f"{path} is not installed: install the Debian package {package} "
            f"(apt-get install {package})"
        )
    return found
