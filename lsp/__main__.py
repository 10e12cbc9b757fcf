"""`infill-lsp`: the language server over stdio (default) or TCP.

    infill-lsp [--model DIR] [--device auto|cpu|cuda] [--tcp HOST:PORT] [--log-file FILE]

The model is found as `infill complete` finds it: `--model`, then $INFILL_MODEL, then the built-in
default. Client settings (`initializationOptions`, `workspace/didChangeConfiguration`) override the
flags; see docs/lsp.md.
"""
from __future__ import annotations

import argparse
import logging
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="infill-lsp", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint directory (else $INFILL_MODEL, else the built-in default)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    parser.add_argument("--tcp", metavar="HOST:PORT", help="listen on TCP instead of stdio")
    parser.add_argument("--log-file", help="write the server log here (stderr otherwise)")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(filename=args.log_file, level=args.log_level,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from lsp.options import ServerOptions
    from lsp.server import build_server

    try:
        options = ServerOptions(model=args.model, device=args.device)
    except ValueError as exc:
        print(f"infill-lsp: {exc}", file=sys.stderr)
        return 2
    server = build_server(options)
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        if not port.isdigit():
            print(f"infill-lsp: --tcp wants HOST:PORT, got {args.tcp!r}", file=sys.stderr)
            return 2
        server.start_tcp(host or "127.0.0.1", int(port))
    else:
        server.start_io()
    return 0


if __name__ == "__main__":
    sys.exit(main())
