"""``wham-gym`` command line: one subcommand per job.

Each job lives in its own module exposing ``register(subparsers)``, which adds
a parser and sets ``func`` to a callable taking the parsed args and returning
an exit code. Modules whose optional dependencies are missing still register,
and report what to install when run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..threads import parse_threads, set_threads

COMMAND_MODULES = (
    "wham_gym.commands.model",  # convert, info
    "wham_gym.commands.dream",  # dream, demo
    "wham_gym.commands.train",  # train {all, tokenizer, world-model, reward}
    "wham_gym.commands.bench",  # bench
    "wham_gym.commands.drift",  # drift
    "wham_gym.commands.games",  # record, play-doom
    "wham_gym.commands.serve",  # serve
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wham-gym", description="WHAM world models as Gymnasium environments.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("wham_gym"):
                continue  # a job not built yet
            raise
        module.register(sub)
    parser.set_defaults(threads="auto")
    for job in _jobs(parser):  # every job takes --threads, after its name like its other options
        job.add_argument("--threads", default="auto",
                         help="torch threads: a positive int, or auto (default): the cores the 1-minute load "
                              "average leaves free, so a shared machine is not oversubscribed (wham_gym/threads.py)")
    return parser


def _jobs(parser: argparse.ArgumentParser):
    """The parsers that run a job: the leaves under ``parser``'s subcommands (``train all``, not ``train``)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subs:
        for job in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
            yield from (_jobs(job) if any(isinstance(a, argparse._SubParsersAction) for a in job._actions)
                        else [job])


def version() -> str:
    """``wham_gym.__version__`` (tests/test_first_hour.py holds it equal to pyproject.toml's)."""
    from wham_gym import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not as a traceback at interpreter exit
    except BrokenPipeError:
        # The reader went away (`wham-gym info | head -1`): Python's documented recipe. Point
        # stdout at devnull so the interpreter's final flush cannot fail again, and exit quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        args.threads = set_threads(parse_threads(args.threads))  # before any job builds a model
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"wham-gym {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
