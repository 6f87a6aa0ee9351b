"""The ``medseg`` command line: thin commands over library calls.

Each pipeline stage registers its commands from its own module (``medseg.cli.io_cmds``,
``medseg.cli.train_cmd``, ...). A :class:`~medseg.errors.MedsegError` becomes a one-line
message and exit code 1; ``--verbose`` shows the traceback and debug logging.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer

from medseg.errors import MedsegError

app = typer.Typer(
    name="medseg",
    help="Volumetric medical image segmentation: convert, train, predict, evaluate, export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"verbose": False}

# Command modules, in pipeline order. Each defines ``register(app)``.
COMMAND_MODULES = (
    "medseg.cli.io_cmds",
    "medseg.cli.data_cmds",
    "medseg.cli.train_cmd",
    "medseg.cli.predict_cmd",
    "medseg.cli.evaluate_cmd",
    "medseg.cli.bundle_cmd",
)


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


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # stage not installed in this build
                continue
            raise
        module.register(app)


_register_all()


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
