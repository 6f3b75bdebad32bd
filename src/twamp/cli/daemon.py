"""What a service needs besides its work: privileges dropped after binding, a pid file, and
logs as text or JSON lines (`--user`, `--group`, `--pid-file`, `--log-format`).

The options store their values in the click context (`daemon_options`), so a command gains them
without new parameters; its body reads them with `daemon_settings()`.

Privileges: `twamp server` binds TCP 862 and `twamp reflect` UDP 862, which need root (or
CAP_NET_BIND_SERVICE); nothing after binding does. `drop_privileges` sets the supplementary
groups to the user's (or none), then the group, then the user, in that order (the other order
would leave the process unable to change its group), and checks that root cannot be regained.
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import pwd
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from .common import UserError

__all__ = [
    "DaemonSettings",
    "JsonFormatter",
    "PidFile",
    "apply_log_format",
    "daemon_options",
    "daemon_settings",
    "drop_privileges",
]

log = logging.getLogger("twamp.daemon")

F = TypeVar("F", bound=Callable[..., Any])
_META = "twamp.daemon"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message (and exc)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)

    converter = staticmethod(time.gmtime)


def _ids(user: str | None, group: str | None) -> tuple[int | None, int | None, str]:
    uid = gid = None
    names = []
    if user is not None:
        try:
            entry = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
        except KeyError:
            raise UserError(f"--user {user}: no such user on this host") from None
        uid, gid = entry.pw_uid, entry.pw_gid
        names.append(f"user {entry.pw_name} ({uid})")
    if group is not None:
        try:
            gentry = grp.getgrnam(group) if not group.isdigit() else grp.getgrgid(int(group))
        except KeyError:
            raise UserError(f"--group {group}: no such group on this host") from None
        gid = gentry.gr_gid
        names.append(f"group {gentry.gr_name} ({gid})")
    elif gid is not None:
        names.append(f"group {grp.getgrgid(gid).gr_name} ({gid})")
    return uid, gid, ", ".join(names)


def drop_privileges(user: str | None, group: str | None) -> None:
    """Become `user` (and `group`, default: the user's primary group), for good."""
    if user is None and group is None:
        return
    uid, gid, names = _ids(user, group)
    if os.geteuid() != 0:
        raise UserError(
            f"--user/--group need root to switch to {names}; start as root, or drop the options"
        )
    # getaddrinfo() loads the idna codec on first use; after the switch the user may not be
    # allowed to read the Python installation (a venv in a 0700 directory), so load it now.
    "localhost".encode("idna")
    if uid is not None and user is not None and not user.isdigit():
        os.initgroups(pwd.getpwuid(uid).pw_name, gid if gid is not None else os.getgid())
    else:
        os.setgroups([])
    if gid is not None:
        os.setresgid(gid, gid, gid)
    if uid is not None:
        os.setresuid(uid, uid, uid)
        if uid != 0:
            try:
                os.setuid(0)
            except PermissionError:
                pass
            else:  # pragma: no cover - a kernel that lets us back is not one to run on
                raise UserError("could not drop root: setuid(0) still works after the switch")
    log.info("privileges dropped to %s", names)


class PidFile:
    """Our PID in a file while we run; refuses to start over a live process's file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def write(self) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            other = int(self.path.read_text().strip())
            if other != os.getpid() and _alive(other):
                raise UserError(
                    f"pid file {self.path} names process {other}, which is running: stop it, "
                    "or give another --pid-file"
                )
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            tmp.write_text(f"{os.getpid()}\n")
            tmp.replace(self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise UserError(
                f"cannot write the pid file {self.path}: {exc.strerror or exc}; give --pid-file a "
                "path in a writable directory"
            ) from None

    def remove(self) -> None:
        """Remove the file if it is still ours (after a privilege drop this may be refused)."""
        with contextlib.suppress(OSError, ValueError):
            if int(self.path.read_text().strip()) == os.getpid():
                self.path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class DaemonSettings:
    user: str | None = None
    group: str | None = None
    pid_file: str | None = None
    log_format: str = "text"

    def check(self) -> None:
        """Fail before binding anything: unknown names, not root."""
        if self.user is None and self.group is None:
            return
        _, _, names = _ids(self.user, self.group)
        if os.geteuid() != 0:
            raise UserError(
                f"--user/--group need root to switch to {names}; start as root, or drop them"
            )

    def started(self, *, drop: bool = True) -> PidFile | None:
        """Once bound: write the pid file (while still root), then drop privileges."""
        pid = PidFile(self.pid_file) if self.pid_file else None
        if pid is not None:
            pid.write()
        if drop:
            drop_privileges(self.user, self.group)
        return pid


def apply_log_format(fmt: str) -> None:
    """Switch the root logger's handlers to JSON lines (`--log-format json`)."""
    if fmt != "json":
        return
    for handler in logging.getLogger().handlers:
        handler.setFormatter(JsonFormatter())


def _store(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta.setdefault(_META, {})[param.name] = value
    return value


def daemon_settings() -> DaemonSettings:
    values = click.get_current_context().meta.get(_META, {})
    return DaemonSettings(**{k: v for k, v in values.items() if v is not None})


def daemon_options(func: F) -> F:
    """--user, --group, --pid-file, --log-format (read with `daemon_settings()`)."""
    options = [
        click.option(
            "--log-format",
            type=click.Choice(["text", "json"]),
            default="text",
            show_default=True,
            expose_value=False,
            is_eager=True,
            callback=_store,
            help="Logs on stderr as text lines or as JSON objects, one per line.",
        ),
        click.option(
            "--pid-file",
            metavar="FILE",
            expose_value=False,
            callback=_store,
            help="Write our PID to FILE once listening; removed at exit.",
        ),
        click.option(
            "--group",
            metavar="GROUP",
            expose_value=False,
            callback=_store,
            help="Switch to this group once bound (default: the user's).",
        ),
        click.option(
            "--user",
            metavar="USER",
            expose_value=False,
            callback=_store,
            help="Switch to this user once the ports are bound (needs root).",
        ),
    ]
    for option in options:
        func = option(func)
    return func
