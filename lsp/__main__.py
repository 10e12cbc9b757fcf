"""`infill-lsp`: the language server over stdio (default), TCP or a Unix socket.

    infill-lsp [--model DIR] [--device auto|cpu|cuda] [--log-file FILE]
               [--tcp [HOST:]PORT --token-file FILE | --socket PATH]

Over TCP (loopback unless HOST says otherwise) the client's `initialize` must carry the token of
`--token-file` as `initializationOptions.token`; a Unix socket is created with mode 0700 instead.
Either serves one client at a time and exits when that client disconnects (docs/lsp.md).

The model is found as `infill complete` finds it: `--model`, then $INFILL_MODEL, then the built-in
default. Client settings (`initializationOptions`, `workspace/didChangeConfiguration`) override the
flags; see docs/lsp.md.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="infill-lsp", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint directory (else $INFILL_MODEL, else the built-in default)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    door = parser.add_mutually_exclusive_group()
    door.add_argument("--tcp", metavar="[HOST:]PORT",
                      help="listen on TCP instead of stdio (HOST defaults to 127.0.0.1; needs --token-file)")
    door.add_argument("--socket", metavar="PATH", help="listen on a Unix socket (mode 0700) instead of stdio")
    parser.add_argument("--token-file", metavar="FILE",
                        help="file holding the token a --tcp client sends as initializationOptions.token")
    parser.add_argument("--log-file", help="write the server log here (stderr otherwise)")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(filename=args.log_file, level=args.log_level,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from pygls.io_ import StdoutWriter

    from lsp import transport
    from lsp.options import ServerOptions
    from lsp.server import build_server

    try:
        options = ServerOptions(model=args.model, device=args.device)
        listener, token = _listener(args)
    except (ValueError, OSError) as exc:
        print(f"infill-lsp: {exc}", file=sys.stderr)
        return 2
    server = build_server(options)
    if listener is None:
        # A reader of its own on fd 0: the reader thread may still block in it at exit, and sys.stdin's
        # lock held by a daemon thread aborts the interpreter's shutdown.
        stdin = open(sys.stdin.fileno(), "rb", closefd=False)
        return transport.serve(server, stdin, StdoutWriter(sys.stdout.buffer))
    try:
        return transport.serve_socket(server, listener, token)
    finally:
        if args.socket:
            Path(args.socket).expanduser().unlink(missing_ok=True)


def _listener(args: argparse.Namespace):
    """(listening socket or None for stdio, token or None); ValueError/OSError with a one-line reason."""
    from lsp import transport

    if args.token_file and not args.tcp:
        raise ValueError("--token-file goes with --tcp")
    if args.socket:
        return transport.listen_unix(args.socket), None
    if not args.tcp:
        return None, None
    host, _, port = args.tcp.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--tcp wants [HOST:]PORT, got {args.tcp!r}")
    if not args.token_file:
        raise ValueError("--tcp needs --token-file FILE (a client sends its content as "
                         "initializationOptions.token), or use --socket PATH")
    token = transport.read_token(args.token_file)
    try:
        return transport.listen_tcp(host, int(port)), token
    except OSError as exc:
        raise OSError(f"--tcp {args.tcp}: cannot listen there ({exc.strerror or exc})") from None


if __name__ == "__main__":
    sys.exit(main())
