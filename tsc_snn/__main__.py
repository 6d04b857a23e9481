"""``tsc-snn convert|evaluate|sweep|train ...`` (the converter's commands) and ``tsc-snn serve`` (the server).

``python -m converter ...`` and ``python -m service ...`` keep working; this is the installed console script.
"""

from __future__ import annotations

import sys

from service import __version__

USAGE = """usage: tsc-snn {convert,evaluate,sweep,train,serve} ... | --version

  convert, evaluate, sweep, train   the converter (tsc-snn COMMAND --help)
  serve                             the HTTP server (tsc-snn serve --help; settings from TSC_* variables)
"""


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the converter's command line or to the server; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if args else 2
    if args[0] == "--version":
        print(f"tsc-snn {__version__}")
        return 0
    if args[0] == "serve":
        from service.__main__ import main as serve

        serve(args[1:])
        return 0
    from converter.cli import main as convert

    return convert(args)


if __name__ == "__main__":
    sys.exit(main())
