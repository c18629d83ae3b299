"""Pieces every command shares: strict boolean flags, logging to console + file, locating the
dataset folder from the calling script, and turning :class:`InputError` into a clean exit."""
from __future__ import annotations

import argparse
import functools
import logging
import sys
from pathlib import Path
from typing import Callable, TypeVar

from data_utils.errors import InputError

F = TypeVar("F", bound=Callable)

_TRUE = {"true", "t", "yes", "y", "1", "on"}
_FALSE = {"false", "f", "no", "n", "0", "off", ""}


def str2bool(value: str | bool) -> bool:
    """Parse a boolean flag strictly: ``--checkpoint False`` means false (unlike the authors' scripts)."""
    if isinstance(value, bool):
        return value
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False, yes/no, 1/0), got {value!r}")


def repo_root() -> Path:
    """The repository root (the folder holding ``src/`` and ``data_utils/``)."""
    return Path(__file__).resolve().parents[3]


def dataset_dir_from_script(script_file: str) -> Path:
    """``src/<ds>/{seg,refine}-models/<script>.py`` → ``src/<ds>``; paths never depend on the cwd."""
    return Path(script_file).resolve().parents[1]


def setup_logging(log_file: Path | None = None, level: int = logging.INFO, rank: int = 0) -> logging.Logger:
    """Log to the console and (rank 0 only) to ``log_file`` (appended, folder created).

    Returns the ``patchrefinenet`` logger. Calling it again replaces the previous handlers, so
    tests and notebooks can run several commands in one process.
    """
    logger = logging.getLogger("patchrefinenet")
    logger.setLevel(level)
    logger.propagate = False
    for h in list(logger.handlers):
        if getattr(h, "keep", False):  # a caller's own log (the demo's) survives nested commands
            continue
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if rank != 0:
        console.setLevel(logging.WARNING)
    if log_file is not None and rank == 0:
        log_file = Path(log_file)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file, mode="a")
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    return logger


def add_threads_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--threads N`` (0 = automatic, see :func:`configure_cli_threads`) to ``parser``."""
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="CPU threads for torch (default 0 = automatic: the physical cores, fewer while other "
                             "processes keep cores busy; OMP_NUM_THREADS, if set, is used as given)")
    return parser


def configure_cli_threads(threads: int | None) -> int:
    """Apply ``--threads`` at the start of a command (:func:`patchrefinenet.training.configure_threads`);
    torch is imported here, after parsing, so ``--help`` stays instant."""
    from patchrefinenet.training import configure_threads

    return configure_threads(threads)


def keep_log_file(log_file: Path) -> logging.Handler:
    """Add a file handler to the ``patchrefinenet`` logger that later :func:`setup_logging` calls keep,
    so a driver (the demo) records the logs of every command it runs in its own file."""
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S"))
    handler.keep = True  # type: ignore[attr-defined]
    logging.getLogger("patchrefinenet").addHandler(handler)
    return handler


def cli_entry(func: F) -> F:
    """Wrap a ``main`` so bad input ends with ``error: <message>`` and exit status 2, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted; completed work and the last checkpoint are kept "
                  "(training resumes with --resume True)", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]
