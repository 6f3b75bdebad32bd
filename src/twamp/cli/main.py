"""`twamp`: the TWAMP server, the `ping` controller and the TWAMP Light reflector."""

from __future__ import annotations

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="twamp")
def cli() -> None:
    """TWAMP (RFC 5357) server, controller and TWAMP Light reflector."""


def _register() -> None:
    # Subcommands live in their own modules; imported here so `twamp --help` lists them all.
    from .ping import ping
    from .reflect import reflect
    from .server import server

    cli.add_command(server)
    cli.add_command(ping)
    cli.add_command(reflect)


_register()


def main() -> None:
    cli(prog_name="twamp")


if __name__ == "__main__":
    main()
