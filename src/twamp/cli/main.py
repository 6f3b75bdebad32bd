"""`twamp`: the TWAMP server, the `ping` controller and the TWAMP Light reflector."""

from __future__ import annotations

import click

from .. import __version__
from .ping import ping
from .reflect import reflect
from .server import server


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="twamp")
def cli() -> None:
    """TWAMP (RFC 5357) server, controller and TWAMP Light reflector."""


# Subcommands live in their own modules; registered here so `twamp --help` lists them all.
cli.add_command(server)
cli.add_command(ping)
cli.add_command(reflect)


def main() -> None:
    cli(prog_name="twamp")


if __name__ == "__main__":
    main()
