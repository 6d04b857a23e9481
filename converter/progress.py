"""What a long step is doing: one mechanism for every stage (data, calibration, self-check, allocation,
reconstruction, evaluation, training epochs).

A stage shows a tqdm bar while it runs when stderr is a terminal; otherwise it logs one line as it starts
(logger ``converter.progress``, INFO), which the command line writes to stderr (``reporting``). A stage
inside another says nothing: the outer one already tells what is running. ``--quiet`` silences both.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
LOG = logging.getLogger("converter.progress")
_state = {"depth": 0, "quiet": False}


@contextmanager
def stage(name: str, total: int | None = None) -> Iterator[Callable[[float], object]]:
    """Report ``name`` while the block runs; yields ``advance(n)``, which moves its bar (of ``total``) on."""
    outermost, _state["depth"] = _state["depth"] == 0 and not _state["quiet"], _state["depth"] + 1
    bar = None
    if outermost and sys.stderr.isatty():
        bar = tqdm(total=total, desc=name, leave=False, file=sys.stderr)
    elif outermost:
        LOG.info("%s", name)
    try:
        yield bar.update if bar is not None else _ignore
    finally:
        _state["depth"] -= 1
        if bar is not None:
            bar.close()


def steps(items: Iterable[T], name: str, total: int | None = None) -> Iterator[T]:
    """The items of ``items``, reported as one stage whose bar advances by one per item."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with stage(name, total) as advance:
        for item in items:
            yield item
            advance(1)


@contextmanager
def reporting(quiet: bool = False) -> Iterator[None]:
    """While the block runs, stages report on stderr (a command's run), or not at all when ``quiet``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    saved = (_state["quiet"], LOG.level, LOG.propagate)
    _state["quiet"] = quiet
    LOG.setLevel(logging.INFO)
    LOG.propagate = False
    LOG.addHandler(handler)
    try:
        yield
    finally:
        LOG.removeHandler(handler)
        _state["quiet"], level, LOG.propagate = saved
        LOG.setLevel(level)


def _ignore(n: float) -> None:
    """``advance`` of a stage without a bar."""
