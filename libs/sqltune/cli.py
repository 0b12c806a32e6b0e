"""The ``sqltune`` console script: a small registry of subcommands.

Each top-level command (``sqltune k8s ...``, later ``sqltune s3 ...``, ``sqltune data ...``) lives in its
own module and is registered here by name, as ``"module:function"``. Only the module of the command that
is being run is imported, so a command's heavy dependencies never slow down or break another command.

A registering function receives the command's own :class:`argparse.ArgumentParser` and adds arguments or
sub-subcommands to it. Every leaf parser sets ``func`` (via ``set_defaults``) to a callable taking the
parsed namespace and returning the process exit code::

    # libs/sqltune/s3/cli.py
    def register(parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="s3_command", required=True)
        ls = sub.add_parser("ls", help="List objects.")
        ls.add_argument("uri")
        ls.set_defaults(func=_ls)

    # and one line in COMMANDS below:
    "s3": ("sqltune.s3.cli:register", "Inspect and copy artifacts in S3."),

Third-party packages may add commands through the ``sqltune.commands`` entry-point group (value
``module:function``; the entry point's name is the command name).

Exit codes: 0 success, 1 the operation failed, 2 bad input (argparse usage errors and
:class:`~sqltune.errors.SqltuneError` raised before any work started), 130 interrupted. Commands may
return other codes and document them (``sqltune k8s submit`` returns 3 for a stopped job).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

from sqltune import __version__
from sqltune.errors import ConfigError, SqltuneError
from sqltune.log import setup_logging

# name -> ("module:function", one-line help). Keep sorted; other modules add their line here.
COMMANDS: dict[str, tuple[str, str]] = {
    "ask": ("sqltune.ask:register", "Ask a model a question about a database: SQL, checks, repair, rows."),
    "gate": ("sqltune.pipeline.cli:register_gate", "Gate an evaluation report (gate.json) and promote on pass."),
    "k8s": ("sqltune.k8s.cli:register", "Run training/eval jobs and serving on Kubernetes (KubeRay)."),
    "pipeline": ("sqltune.pipeline.cli:register_pipeline", "Train, export, evaluate, gate and promote in one run."),
    "promote": ("sqltune.pipeline.cli:register_promote", "Point serving at a model URI (RayService or local Serve)."),
}

ENTRY_POINT_GROUP = "sqltune.commands"


def register_command(name: str, target: str, help: str) -> None:  # noqa: A002 - argparse's word
    """Register a top-level command at run time (for tests and plugins that cannot edit COMMANDS)."""
    if ":" not in target:
        raise ConfigError(f"command {name!r}: target must be 'module:function' (e.g. 'mypkg.cli:register'), "
                          f"got {target!r}")
    COMMANDS[name] = (target, help)


def _all_commands() -> dict[str, tuple[str, str]]:
    commands = dict(COMMANDS)
    try:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # pragma: no cover - broken metadata must not break the CLI
        eps = []
    for ep in eps:
        commands.setdefault(ep.name, (ep.value, f"(plugin {ep.value})"))
    return commands


def _load(target: str) -> Callable[[argparse.ArgumentParser], None]:
    module_name, _, func_name = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, func_name)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Build the parser; only the command named in ``argv`` (or all of them for help) is imported."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="sqltune", description="Fine-tune, evaluate and serve small text-to-SQL models."
    )
    parser.add_argument("--version", action="version", version=f"sqltune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands = _all_commands()
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name in sorted(commands):
        target, help_text = commands[name]
        cmd_parser = sub.add_parser(name, help=help_text, description=help_text)
        if wanted is None or wanted == name:
            _load(target)(cmd_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
    except SqltuneError as exc:
        print(f"sqltune: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2); return it, don't raise
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    setup_logging(logging.WARNING)  # commands print their results; only warnings are logged
    try:
        return int(func(args) or 0)
    except SqltuneError as exc:
        print(f"sqltune: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print("sqltune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
