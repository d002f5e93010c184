"""Shared command-line plumbing for ``essence`` and each method's sub-commands.

Every method's ``cli.py`` builds an ``argparse`` parser with :func:`method_parser`, adds run arguments with
:func:`add_run_args` to the commands that train or reproduce, and exits through :func:`run_cli`, which turns
user errors into one clear line and exit code 2 (no traceback), a missing extra into exit code 1, Ctrl-C
into 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from essence.core.registry import suggest

__all__ = ["method_parser", "add_run_args", "reproduce_command", "run_cli", "UsageError", "ArgumentParser",
           "device_arg"]


class UsageError(ValueError):
    """A command-line mistake: printed as one line, exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with did-you-mean suggestions for unknown sub-commands and choices."""

    def error(self, message: str):  # type: ignore[override]
        if message.startswith(_DEVICE_ERROR):   # a well-formed value this machine lacks: the usage would not help
            self.exit(2, f"{self.prog}: error: {message[len(_DEVICE_ERROR):]}\n")
        if "invalid choice:" in message:
            try:
                bad = message.split("invalid choice: ")[1].split(" (choose from")[0].strip("'\"")
                choices_txt = message.split("(choose from ")[1].rstrip(")")
                choices = [c.strip().strip("'\"") for c in choices_txt.split(",")]
                message = message.rstrip(")") + ")" + suggest(bad, choices).replace("; ", " - ", 1)
            except IndexError:
                pass
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


_DEVICE_ERROR = "argument --device: "


def device_arg(value: str) -> str:
    """argparse ``type`` of ``--device``: refuse a device this machine does not have (``cuda:7``, ``cuda`` without
    a GPU) before any run directory is made; returns the value unchanged (``auto`` is resolved later, per
    process under torchrun)."""
    from essence.core.runtime import resolve_device

    try:
        resolve_device(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return value


def method_parser(cli_name: str, description: str) -> tuple[ArgumentParser, argparse._SubParsersAction]:
    """The top parser of ``essence <cli_name>`` and its sub-command group (``dest='command'``)."""
    parser = ArgumentParser(prog=f"essence {cli_name}", description=description)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True
    return parser, sub


def reproduce_command(cli_name: str):
    """The handler of ``essence <cli_name> reproduce``: the same run as ``essence reproduce <cli_name>``, with
    ``--out`` naming the run directory exactly."""
    def handler(args) -> int:
        from essence.cli import reproduce_method  # essence.cli imports every method's CLI

        reproduce_method(cli_name, preset=args.preset, out=args.out, exact=args.out is not None, device=args.device,
                         overrides=args.overrides)
        return 0

    return handler


def add_run_args(parser: argparse.ArgumentParser, *, presets: Sequence[str] = ("tiny", "quick", "standard", "paper"),
                 default_preset: str = "quick") -> None:
    """``--preset``, ``--set key=value`` (repeatable), ``--device``, ``--out``, ``--seed``."""
    parser.add_argument("--preset", default=default_preset, choices=list(presets),
                        help=f"config preset (default: {default_preset})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=0.1 (repeatable)")
    parser.add_argument("--device", default="auto", type=device_arg,
                        help="auto | cpu | cuda | cuda:N | mps (default: auto)")
    parser.add_argument("--out", default=None, help="run directory (default: runs/<method>/<time>-<preset>); "
                                                    "an existing run is refused unless resuming")


def run_cli(fn: Callable[[], int | None]) -> int:
    """Call ``fn`` and map errors to exit codes: user error 2, missing dependency 1, Ctrl-C 130."""
    from essence.core.loop import NonFiniteLossError
    from essence.core.progress import console
    from essence.core.runs import discard_empty_runs, forget_new_runs

    forget_new_runs()   # only the runs this command creates
    code = 1
    try:
        code = int(fn() or 0)
        return code
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130
    except NonFiniteLossError as err:  # the run stopped; its last good checkpoint is kept
        _print_error(err)
        return 1
    except ImportError as err:
        _print_error(err)
        return 1
    except (ValueError, FileNotFoundError, NotImplementedError, KeyError) as err:
        _print_error(err.args[0] if isinstance(err, KeyError) and err.args else err)
        return 2
    finally:
        if code != 0:   # a failed command leaves no empty run directory behind (results are never removed);
            discard_empty_runs()   # silently: the error stays one line
        forget_new_runs()


def _print_error(message: object) -> None:
    """``error: <message>`` on one line of stderr: not wrapped at the terminal width (rich would wrap at 80
    columns when stderr is a pipe), and brackets in the message are not taken for markup."""
    from rich.markup import escape

    from essence.core.progress import console

    console.print(f"[red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
