"""The ``robustvit`` command line.

Every :class:`~robustvit.errors.UserError` ends as one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from robustvit import __version__
from robustvit.commands import COMMANDS
from robustvit.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line, exit 2
        self.exit(2, f"robustvit: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="robustvit", description="Robustness evaluation of image classifiers: ViTs vs CNNs.")
    parser.add_argument("--version", action="version", version=f"robustvit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


#: PyTorch's switch that puts CPU tensors of 2 MB and more on transparent huge pages. A fresh batch
#: otherwise faults in 4 KiB at a time, which on some machines costs more than a cheap corruption
#: itself (pixelate, contrast). Read by torch at its first large allocation; a user's value wins.
THP_ENV = "THP_MEM_ALLOC_ENABLE"


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault(THP_ENV, "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except UserError as exc:
        print(f"robustvit: error: {exc}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        print("robustvit: interrupted; finished cells are stored, run again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `robustvit results | head`: the reader has all it wants; stop quietly
        _silence_stdout()
        return 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that flushing at exit does not raise again on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real file descriptor (captured output)
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
