"""``workbench app``: the Gradio app on this machine (loopback by default, never a public share link)."""

from __future__ import annotations

import argparse


def _auth(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("expected USER:PASSWORD")
    return user, password


def _cmd_app(args) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub look-ups at launch; hub backbones need it unset
    from workbench.app.ui import before_launch, build_ui, launch_options

    before_launch()
    demo = build_ui()
    demo.queue(default_concurrency_limit=2)
    demo.launch(server_name=args.host, server_port=args.port, auth=args.auth, **launch_options())
    return 0


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("app", help="the Gradio app: subject intake, comparison, report, erasure")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=None, help="port (default: gradio's, 7860 or the next free)")
    p.add_argument("--auth", type=_auth, default=None, metavar="USER:PASSWORD",
                   help="require a login; each user then sees only their own subject")
    p.set_defaults(func=_cmd_app)


def main(argv: list[str] | None = None) -> int:
    """``python -m workbench.app [--host H] [--port N] [--auth USER:PASSWORD]`` (what `make app` runs)."""
    parser = argparse.ArgumentParser(prog="python -m workbench")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["app", *(argv if argv is not None else __import__("sys").argv[1:])])
    return args.func(args)
