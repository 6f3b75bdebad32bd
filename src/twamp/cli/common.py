"""What every command shares: logging set-up and turning failures into one clear sentence."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import click

P = ParamSpec("P")
R = TypeVar("R")


class UserError(click.ClickException):
    """A mistake or an unreachable target, reported as one sentence and exit status 2."""

    exit_code = 2


def setup_logging(verbose: int, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Map the errors a user can cause (bad address, port in use, refused, ...) to one sentence.

    A traceback is for bugs; everything a user can provoke from the command line or the network
    ends here as `UserError`. KeyboardInterrupt is left to the command, which flushes results.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except PermissionError as exc:
            raise UserError(f"permission denied: {exc.strerror or exc}") from None
        except ConnectionRefusedError:
            raise UserError("connection refused: nothing is listening there") from None
        except TimeoutError:
            raise UserError("timed out waiting for the peer") from None
        except OSError as exc:
            raise UserError(exc.strerror or str(exc)) from None
        except ValueError as exc:
            raise UserError(str(exc)) from None

    return wrapper
