"""infill-lsp for the acceptance-record tests (test_records_e2e.py): the real server over stdio, with
a clock the test moves (`test/advance {"seconds": S}`, a request answered once the time rules ran)
and every socket event of the process written to $INFILL_SOCKET_LOG by an audit hook."""
import os
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests/, for `support`


def main() -> int:
    out = open(os.environ["INFILL_SOCKET_LOG"], "a", buffering=1)

    def audit(event: str, args) -> None:
        if event.startswith("socket."):
            out.write(f"{event} {args!r}\n")

    sys.addaudithook(audit)

    import lsp.__main__
    import lsp.server
    from support import ManualClock

    clock, build = ManualClock(), lsp.server.build_server

    def build_with_clock(options=None):
        server = build(options, clock)

        @server.feature("test/advance")
        def advance(ls, params) -> dict:
            clock.advance(params["seconds"] if isinstance(params, dict) else params.seconds)
            ls.acceptance.sweep()
            return {}
        return server

    lsp.server.build_server = build_with_clock
    return lsp.__main__.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
