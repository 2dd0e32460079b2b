"""What every subcommand of ``keras-edge`` shares: the exit codes, the parser whose usage
errors are one line, and :func:`execute`, which runs a subcommand and maps its errors to exit
codes with at most one line on stderr. It lives in the runtime, the bottom layer, so that the
dispatcher (``keras_edge.cli``), the exporter's and the benchmarks' commands use it without
importing each other; it imports nothing but the runtime's errors.

Exit codes (a release build relies on them): 0 success; 1 an unexpected failure (a bug to
report); 2 bad usage or bad input; 3 a parity, verification or regression gate failed;
130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, NoReturn

from keras_edge.runtime.errors import GateError, KerasEdgeError, UsageError, plain

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_GATE = 0, 1, 2, 3
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(EXIT_USAGE)


def _quiet_broken_pipe() -> None:
    """The reader of stdout went away (``| head``): point stdout at /dev/null so that the
    interpreter's final flush cannot raise again, and end quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (captured in a test)
        pass


def _one_line(exc: BaseException) -> str:
    """A message on one line: a multi-line one (a list of failed variants) joined by '; '."""
    parts = [line.strip() for line in plain(str(exc)).splitlines() if line.strip()]
    return " ".join(p + (";" if i < len(parts) - 1 and not p.endswith(":") else "")
                    for i, p in enumerate(parts))  # fmt: skip


def execute(args: argparse.Namespace) -> int:
    """Run ``args.handler(args)`` and turn every outcome into an exit code, with at most one
    line on stderr: 0 done, 1 unexpected failure, 2 bad usage or input, 3 a gate failed."""
    verbose = getattr(args, "verbose", 0)
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = int(args.handler(args))
        sys.stdout.flush()  # inside the try: a closed pipe surfaces here, not at exit
        return code
    except BrokenPipeError:
        _quiet_broken_pipe()
        return EXIT_OK
    except GateError as exc:
        sys.stderr.write(f"keras-edge: gate failed: {_one_line(exc)}\n")
        return EXIT_GATE
    except UsageError as exc:
        sys.stderr.write(f"keras-edge: error: {_one_line(exc)}\n")
        return EXIT_USAGE
    except KerasEdgeError as exc:
        sys.stderr.write(f"keras-edge: failed: {_one_line(exc)}\n")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        sys.stderr.write("keras-edge: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: one line, the traceback with -vv
        logger.debug("unexpected failure", exc_info=True)
        sys.stderr.write(
            f"keras-edge: unexpected {type(exc).__name__}: {_one_line(exc)} (a bug worth reporting; "
            f"-vv shows the traceback)\n"
        )
        return EXIT_FAILURE


PER_HEAD_HELP = (
    "; for a model with several heads, one NAME=VALUE per head, the option repeated "
    "(--threshold spam=0.3 --threshold tags=0.2,0.6)"
)


def per_head(texts: list[str] | str | None, option: str, parse: Any) -> Any:
    """An option given once (``0.5``, ``0.3,0.6``) as ``parse(text)``, or once per head as
    ``NAME=VALUE`` (repeated) as a dict by head name; None when not given. Anything else is a
    :class:`UsageError` naming what was received."""
    if texts is None:
        return None
    texts = [texts] if isinstance(texts, str) else list(texts)
    named = ["=" in t for t in texts]
    if any(named) and not all(named):
        raise UsageError(
            f"Expected {option} once as a value, or once per head as NAME=VALUE, got {texts}"
        )
    if not any(named):
        if len(texts) > 1:
            raise UsageError(f"Expected {option} once (or NAME=VALUE once per head), got {texts}")
        return parse(texts[0])
    out: dict[str, Any] = {}
    for text in texts:
        name, value = (part.strip() for part in text.split("=", 1))
        if not name or name in out:
            raise UsageError(f"Expected {option} NAME=VALUE once per head, got {text!r} in {texts}")
        out[name] = parse(value)
    return out


def threshold_value(text: str, option: str = "--threshold") -> float | list[float]:
    """A threshold as the command line gives it: a number, or a comma list (multilabel)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise UsageError(f"Expected {option} to be a number or a comma list, got {text!r}") from exc
    return values[0] if len(values) == 1 else values


def number_value(text: str, option: str) -> float:
    """One number as the command line gives it."""
    try:
        return float(text)
    except ValueError as exc:
        raise UsageError(f"Expected {option} to be a number, got {text!r}") from exc
