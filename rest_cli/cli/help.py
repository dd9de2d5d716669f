"""How help pages name what an option takes: words users know (FILE, TEXT, INTEGER, [cpu|cuda]).

typer prints Python's type names (`<str>`, `<bool>`) beside every option and argument. The
`rest` command group rewrites them once, when typer builds the commands, so that no command
has to give each option a metavar by hand: flags show no type, choices list their values, an
argument shows only its name (FILE, SOURCE), and other values say what kind of value they are.
"""

from __future__ import annotations

from pathlib import Path

from typer.core import TyperArgument, TyperCommand, TyperGroup

_TYPE_WORDS = {str: "TEXT", int: "INTEGER", float: "NUMBER", Path: "PATH"}


class ReadableHelp(TyperGroup):
    """A command group whose commands' help shows readable types (see the module's docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        name_types(self)

    def get_help_option(self, ctx):
        return _flag(super().get_help_option(ctx))


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
