"""The ``qaudio`` group, the error table and the options several commands share.

Errors are printed as one line (``error: ...``) with the error's own exit code (2 for bad
input, 1 for failures: :attr:`~qaudio_local.errors.QAudioError.exit_code`); ``--debug``
(before or after the command's name) or ``QAUDIO_DEBUG=1`` adds the traceback and
llama.cpp's own log.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .. import __version__
from ..config import debug_enabled
from ..errors import QAudioError

F = TypeVar("F", bound=Callable[..., Any])

# builtin exception type -> exit code, for errors the library did not wrap (each QAudioError
# carries its own exit_code); the first match wins, anything else exits 1.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (ValueError, 2),
    (OSError, 1),
)


def exit_code(exc: BaseException) -> int:
    """The exit status for ``exc``: a library error's own ``exit_code`` (2: bad input,
    1: a failure), else the first match in :data:`EXIT_CODES`, else 1."""
    if isinstance(exc, QAudioError):
        return exc.exit_code
    return next((c for t, c in EXIT_CODES if isinstance(exc, t)), 1)


def debug_requested(ctx: click.Context | None) -> bool:
    """Whether --debug (anywhere on the command line) or QAUDIO_DEBUG asks for tracebacks."""
    obj = ctx.find_root().obj if ctx is not None else None
    return bool(obj and obj.get("debug")) or debug_enabled()


def handle_errors(func: F) -> F:
    """Turn library errors into one clean line and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:
            # the reader went away (e.g. `| head`): stop quietly, as other tools do
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("\nerror: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:
            if debug_requested(click.get_current_context(silent=True)):
                traceback.print_exc()
            code = exit_code(exc)
            msg = (
                str(exc)
                if isinstance(exc, QAudioError | ValueError | OSError)
                else (f"unexpected {type(exc).__name__}: {exc} (rerun with --debug and report it)")
            )
            click.echo(f"error: {msg}", err=True)
            sys.exit(code)

    return wrapper  # type: ignore[return-value]


DEBUG_HELP = "Show tracebacks and llama.cpp's log on stderr."


def _enable_debug(ctx: click.Context) -> None:
    root = ctx.find_root()
    if root.obj is None:
        root.obj = {}
    root.obj["debug"] = True
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(name)s: %(message)s")


def _debug_flag(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        _enable_debug(ctx)


def debug_option() -> click.Option:
    """``--debug`` for a subcommand: ``qaudio selftest --debug`` is ``qaudio --debug selftest``.

    Eager, so it is on before the other options are checked and the command runs.
    """
    return click.Option(
        ["--debug"],
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_debug_flag,
        help=DEBUG_HELP,
    )


class _Group(click.Group):
    """The command group: click's own usage errors come out as one ``error:`` line too, and
    every command takes ``--debug`` after its name as well as before it."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not any(p.name == "debug" for p in cmd.params):
            cmd.params.append(debug_option())
        super().add_command(cmd, name)

    def main(  # type: ignore[override]
        self, args: Any = None, prog_name: str | None = None, **extra: Any
    ) -> Any:
        if extra.get("standalone_mode", True) is False:
            return super().main(args, prog_name, **extra)
        try:
            code = super().main(args, prog_name, **{**extra, "standalone_mode": False})
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()  # the help itself, as click prints it
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            click.echo(f"error: {exc.format_message()}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group("qaudio", cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qaudio")
@click.option("--debug", is_flag=True, help=DEBUG_HELP + " Also accepted after the command.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Run Qwen2-Audio locally: transcribe, translate, or ask about speech, sound and music.

    Start with `qaudio selftest` to check the install, then `qaudio run AUDIO ...`.
    """
    ctx.obj = {"debug": False}
    if debug or debug_enabled():
        _enable_debug(ctx)
