"""The ``medseg`` command line: thin commands over library calls.

Each pipeline stage registers its commands from its own module (``medseg.cli.io_cmds``,
``medseg.cli.train_cmd``, ...); each is imported and registered explicitly below, in
pipeline order. A :class:`~medseg.errors.MedsegError` becomes a one-line message and exit
code 1; ``--verbose`` shows the traceback and debug logging.
"""

from __future__ import annotations

import logging
import sys

import typer

from medseg.cli import (
    bundle_cmd,
    cache_cmd,
    classic_cmd,
    data_cmds,
    dicom_cmd,
    evaluate_cmd,
    io_cmds,
    onnx_cmd,
    predict_cmd,
    train_cmd,
)
from medseg.errors import MedsegError

app = typer.Typer(
    name="medseg",
    help="Volumetric medical image segmentation: convert, train, predict, evaluate, export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"verbose": False}


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging and tracebacks."),
) -> None:
    _state["verbose"] = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s",
        force=True,
    )


# The commands, in pipeline order.
io_cmds.register(app)
data_cmds.register(app)
train_cmd.register(app)
cache_cmd.register(app)
predict_cmd.register(app)
classic_cmd.register(app)
evaluate_cmd.register(app)
bundle_cmd.register(app)
onnx_cmd.register(app)
dicom_cmd.register(app)


def main(args: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 success, 1 user error, 2 usage error)."""
    try:
        rc = app(args=args, standalone_mode=False)
    except MedsegError as exc:
        if _state["verbose"]:
            logging.getLogger("medseg").exception("error")
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        return 1
    except SystemExit as exc:  # typer/click exit with a code
        return int(exc.code or 0)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except Exception as exc:  # usage errors (typer >= 0.25 vendors click: no `import click`)
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            return code
        if isinstance(exc, typer.Abort):
            return 1
        raise
    return int(rc) if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
