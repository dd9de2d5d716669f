"""How the command line presents itself: help pages, and usage errors as one line.

typer prints Python's type names (`<str>`, `<bool>`) beside every option and argument. The
`rest` command group rewrites them once, when typer builds the commands, so that no command
has to give each option a metavar by hand: flags show no type, choices list their values, an
argument shows only its name (FILE, SOURCE), and other values say what kind of value they are.

A mistyped command or option (`rest smaple`, `--preset huge`) is a usage error, exit 2, shown
as one line like every other error of rest (`rest finetune: error: ...`), not as a framed box:
logs stay greppable.
"""

from __future__ import annotations

import sys
from pathlib import Path

from typer.core import TyperArgument, TyperCommand, TyperGroup

from rest_cli.cli.common import one_line

try:  # typer vendors click from 0.2x on; before, it used click itself
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException

_TYPE_WORDS = {str: "TEXT", int: "INTEGER", float: "NUMBER", Path: "PATH"}


class ReadableHelp(TyperGroup):
    """A command group whose commands' help shows readable types (see the module's docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        name_types(self)

    def get_help_option(self, ctx):
        return _flag(super().get_help_option(ctx))

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        """Run the command line; a usage error becomes one line on stderr, exit 2."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except ClickException as err:
            sys.exit(_usage_error(err))
        sys.exit(code if isinstance(code, int) else 0)


def _usage_error(err: ClickException) -> int:
    """Show a usage error as `rest CMD: error: ...`; return its exit code."""
    if type(err).__name__ == "NoArgsIsHelpError":  # `rest` alone: the help is already shown
        return err.exit_code
    context = getattr(err, "ctx", None)
    # `rest finetune`, however it was started (`python -m rest_cli` names itself differently)
    where = "rest" + context.command_path[len(context.find_root().info_name or ""):] if context else "rest"
    hint = f" (see {where} --help)" if context is not None else ""
    print(f"{where}: error: {one_line(err.format_message())}{hint}", file=sys.stderr)
    return err.exit_code


class _ReadableCommand(TyperCommand):
    """A command of a ReadableHelp group: its --help is a flag like the others, with no type."""

    def get_help_option(self, ctx):
        return _flag(super().get_help_option(ctx))


def _flag(option):
    if option is not None:
        option.metavar = ""
    return option


class _NamedArgument(TyperArgument):
    """An argument whose metavar says what it takes (FILE, SOURCE): no type printed beside it."""

    def display_type_rich(self, ctx) -> None:
        return None


def name_types(command) -> None:
    """Give every parameter of `command` and of its subcommands a readable metavar (unless it has one)."""
    for sub in getattr(command, "commands", {}).values():
        # typer builds every command before the group that holds it; the group's __init__ sees them
        # all, so it adopts them here rather than each command being declared with a class.
        sub.__class__ = ReadableHelp if isinstance(sub, TyperGroup) else _ReadableCommand
        name_types(sub)
    for param in command.params:
        if isinstance(param, TyperArgument):
            param.metavar = param.metavar or param.name.upper()
            param.__class__ = _NamedArgument
        elif param.metavar is None:
            param.metavar = _metavar(param)


def _metavar(option) -> str:
    if getattr(option, "is_flag", False):
        return ""  # a flag takes no value: nothing to name
    described = option.type_descriptor
    if described.is_choice:
        return "[" + "|".join(str(choice) for choice in described.choices) + "]"
    return _TYPE_WORDS.get(described.annotation, "TEXT")
