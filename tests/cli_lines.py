"""Check a ``calsync ...`` command line against the real command line interface: every subcommand on the path
exists, every ``--option`` belongs to the command it is given to (or to ``calsync`` itself, before the
subcommand; ``-c FILE`` may also come after it), and no command gets more arguments than it takes. Used on the
docs' examples (test_docs.py) and on the ExecStart lines of the systemd units (test_deploy.py).

Only names are checked, not values: docs write placeholders (``EMAIL``, ``N``, ``<client id>``).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

# Typer builds click commands, but recent Typer releases bring their own copy of click (``typer._click``), so
# the commands are looked at by their attributes (``commands``, ``param_type_name``, ``opts``), not by class.


@cache
def root_command() -> Any:
    """The ``calsync`` command as click sees it: a group whose ``commands`` are the subcommands."""
    import typer

    from calsync.cli import app

    return typer.main.get_command(app)


def _params(command: Any) -> list[Any]:
    return list(command.get_params(command.context_class(command)))


def _options(command: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for param in _params(command):
        if param.param_type_name == "option":
            for name in (*param.opts, *param.secondary_opts):
                found[name] = param
    return found


def _takes_value(option: Any) -> bool:
    return not option.is_flag and not option.count


def _max_arguments(command: Any) -> int | None:
    """How many positional arguments the command takes; None for any number."""
    total = 0
    for param in _params(command):
        if param.param_type_name == "argument":
            if param.nargs < 0:
                return None
            total += param.nargs
    return total


def _as_the_cli_reads(args: list[str]) -> list[str]:
    """The arguments as the root command hands them to click: ``calsync`` moves ``-c FILE`` given after the
    command to the front (``calsync.cli.config_first``), so the check does the same."""
    from calsync import cli

    reorder = getattr(cli, "config_first", None)
    return list(args) if reorder is None else list(reorder(args))


def check_arguments(args: list[str]) -> list[str]:
    """Problems with ``calsync ARGS`` (``args`` without the program name): empty when the line is valid."""
    args = _as_the_cli_reads(args)
    command = root_command()
    path = ["calsync"]
    positional = 0
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if token.startswith("-") and token != "-":
            name, has_value, _ = token.partition("=")
            # As click reads it: an option belongs to the command named last, so a group's option goes before
            # the subcommand (``calsync --version``, not ``calsync status --version``).
            option = _options(command).get(name)
            if option is None:
                known = ", ".join(sorted(_options(command)))
                return [f"`{' '.join(path)}` has no option {name} (it has: {known})"]
            if _takes_value(option) and not has_value:
                i += 1  # the option's value
            continue
        if isinstance(getattr(command, "commands", None), dict):  # a group: the token names a subcommand
            sub = command.commands.get(token)
            if sub is None:
                known = ", ".join(sorted(command.commands))
                return [f"`{' '.join(path)}` has no command {token!r} (it has: {known})"]
            command = sub
            path.append(token)
            continue
        positional += 1
        limit = _max_arguments(command)
        if limit is not None and positional > limit:
            return [f"`{' '.join(path)}` takes {limit} argument(s), given more: {token!r}"]
    return []


@dataclass(frozen=True)
class CommandLine:
    """One ``calsync`` invocation found in a text: where, as written, and its arguments."""

    where: str  # file:line
    text: str
    args: list[str]


def _is_calsync(word: str) -> bool:
    return word == "calsync" or word.endswith("/calsync")


def calsync_invocations(line: str) -> Iterator[list[str]]:
    """The argument lists of every ``calsync`` invocation in one shell line: at its start, or after ``&&``,
    ``||``, ``;`` or ``|``, after ``$ `` (a prompt), ``ExecStart=`` (a systemd unit), ``VAR=value``
    assignments, ``sudo [-u USER]`` or ``env [VAR=value]``. Comments are dropped. ``[--a | --b]`` (a choice,
    as usage texts write it) counts as both."""
    text = line.strip()
    if text.startswith("$ "):
        text = text[2:]
    if text.startswith("ExecStart="):
        text = text[len("ExecStart=") :]
    # `[--enabled | --disabled]`: show both options to the check, not a pipe into a command `--disabled]`
    text = _unbracket(text)
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError:  # an unclosed quote: not a shell line
        return
    segment: list[str] = []
    for token in [*tokens, ";"]:
        if token and set(token) <= set(";&|"):
            words = _command_words(segment)
            if words and _is_calsync(words[0]):
                yield words[1:]
            segment = []
        else:
            segment.append(token)


SUDO_OPTIONS_WITH_VALUE = {"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U"}


def _command_words(words: list[str]) -> list[str]:
    """The words of a simple command from the command itself: without ``VAR=value`` assignments, ``sudo`` and
    ``env`` (and their options) in front of it."""
    while words:
        first = words[0]
        if "=" in first and not first.startswith("-"):
            words = words[1:]  # VAR=value
        elif first in ("sudo", "env"):
            words = words[1:]
            while words and words[0].startswith("-"):
                takes_value = first == "sudo" and words[0] in SUDO_OPTIONS_WITH_VALUE
                words = words[2:] if takes_value else words[1:]
        else:
            break
    return words


def _unbracket(text: str) -> str:
    out, depth = [], 0
    for ch in text:
        if ch == "[":
            depth += 1
            out.append(" ")
        elif ch == "]" and depth:
            depth -= 1
            out.append(" ")
        elif ch == "|" and depth:
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)
