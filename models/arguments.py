"""Command-line argument types shared by every CLI (producers, stream, batch).

Each returns a parser for ``argparse``'s ``type=``: a bad value becomes a one-line usage
error naming the argument, never a traceback.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from models.events import parse_instant


def number(
    low: float = 0.0, *, inclusive: bool = True, high: float | None = None, below: bool = False
) -> Callable[[str], float]:
    """A finite float from ``low`` (or above it when not ``inclusive``) up to ``high``
    (or below it when ``below``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or value < low or (value == low and not inclusive):
            if low == 0.0:
                bound = "zero or more" if inclusive else "more than zero"
            else:
                bound = f"at least {low:g}" if inclusive else f"above {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        if high is not None and (value > high or (below and value == high)):
            raise argparse.ArgumentTypeError(
                f"must be {'below' if below else 'at most'} {high:g}, got {text}"
            )
        return value

    return parse


def whole(low: int = 0) -> Callable[[str], int]:
    """An integer of at least ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low:
            bound = "zero or more" if low == 0 else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


def instant(text: str) -> float:
    """An ISO 8601 time (UTC when it has no offset) as POSIX seconds."""
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def time_of_day(text: str) -> str:
    """An HH:MM (UTC) option, refused with the option's own name rather than the setting's."""
    from models.settings import is_time_of_day

    if not is_time_of_day(text):
        raise argparse.ArgumentTypeError(f"must be HH:MM (UTC), e.g. 02:00, got {text!r}")
    return text


def subcommand(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    epilog: str,
    **kwargs: Any,
) -> argparse.ArgumentParser:
    """A sub-command whose ``--help`` ends with ``epilog`` (the ``FRAUD_*`` variables) as
    written, line breaks kept."""
    return commands.add_parser(
        name, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs
    )
