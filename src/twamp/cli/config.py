"""TOML configuration files for `twamp server` and `twamp reflect` (`--config FILE`).

One file may hold both services, each in its table; keys are the long option names, with
dashes or underscores, and values are what the option takes on the command line (a list for a
repeatable option)::

    [server]
    listen = ["0.0.0.0:862", "[::]:862"]
    modes = "open,authenticated"
    keyfile = "/etc/twamp/twamp-server.pfs"
    max-sessions = 256
    metrics = ":9862"
    user = "twamp"
    pid-file = "/run/twamp/server.pid"
    log-format = "json"

    [reflect]
    listen = [":862"]
    stateful = true

A file with no `[server]` / `[reflect]` table gives its top-level keys to the command. The file
only changes defaults (click's `default_map`): anything on the command line wins. An unknown key
or a file that does not parse is one sentence naming the file and the key.

`--dump-config` prints the settings in effect as such a file and exits, so
`twamp server ... --dump-config > twamp.toml` starts a configuration and
`twamp server --config twamp.toml --dump-config` shows what a file amounts to.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from ..constants import SECURITY_MODES, Mode
from .common import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]

__all__ = ["config_options", "dump_config", "dump_requested", "load_config"]

F = TypeVar("F", bound=Callable[..., Any])

_META_DUMP = "twamp.dump_config"
_NOT_CONFIGURABLE = {"config_file", "dump_config", "help"}
_SECURITY_WORDS = {
    Mode.UNAUTHENTICATED: "open",
    Mode.AUTHENTICATED: "authenticated",
    Mode.ENCRYPTED: "encrypted",
    Mode.MIXED: "mixed",
}


def load_config(path: str | Path, section: str, command: click.Command) -> dict[str, Any]:
    """The `section` table of the TOML file at `path`, keys checked against `command`'s options."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read the config file {file}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {file} is not valid TOML: {exc}") from None
    table = data.get(section)
    if table is None:
        table = {k: v for k, v in data.items() if not isinstance(v, dict)}
    if not isinstance(table, dict):
        raise UserError(f"config file {file}: [{section}] must be a table")
    known = {p.name: p for p in command.params if p.name and p.name not in _NOT_CONFIGURABLE}
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in known:
            choices = ", ".join(sorted(n.replace("_", "-") for n in known))
            raise UserError(
                f"config file {file}: unknown option {key!r} in [{section}]; known: {choices}"
            )
        param = known[name]
        if getattr(param, "multiple", False) and not isinstance(value, list):
            value = [value]
        out[name] = [str(v) for v in value] if isinstance(value, list) else value
    return out


def _render(value: Any) -> Any:
    """A parsed option value back to what its option takes, for TOML."""
    if isinstance(value, bool | int | float | str):
        if isinstance(value, Mode):
            return ",".join(w for bit, w in _SECURITY_WORDS.items() if value & bit)
        return value
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        host, port = value
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return f"{value[0]}-{value[1]}"
    if isinstance(value, tuple | list):
        return [_render(v) for v in value]
    return str(value)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string


def dump_config(section: str, params: Mapping[str, Any]) -> str:
    """The settings in `params` (a command's parsed options) as a TOML `[section]` table."""
    lines = [f"[{section}]"]
    for name, value in params.items():
        if name in _NOT_CONFIGURABLE or value is None or value == ():
            continue
        lines.append(f"{name.replace('_', '-')} = {_toml_value(_render(value))}")
    return "\n".join(lines) + "\n"


def _load(section: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        loaded = load_config(value, section, ctx.command)
        ctx.default_map = {**(ctx.default_map or {}), **loaded}
        return value

    return callback


def _dump(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    ctx.meta[_META_DUMP] = value
    return value


def dump_requested() -> bool:
    """Whether `--dump-config` was given (read in the command's body)."""
    return bool(click.get_current_context().meta.get(_META_DUMP))


def config_options(section: str) -> Callable[[F], F]:
    """`--config FILE` (read before every other option) and `--dump-config`."""

    def decorate(func: F) -> F:
        func = click.option(
            "--dump-config",
            is_flag=True,
            expose_value=False,
            callback=_dump,
            help="Print the settings in effect as a TOML config file, and exit.",
        )(func)
        return click.option(
            "--config",
            "config_file",
            metavar="FILE",
            is_eager=True,
            expose_value=False,
            callback=_load(section),
            help=f"TOML file whose [{section}] table sets defaults; the command line overrides.",
        )(func)

    return decorate


# Security modes only: the feature bits are not options of `twamp server`.
assert all(bit & SECURITY_MODES for bit in _SECURITY_WORDS)
