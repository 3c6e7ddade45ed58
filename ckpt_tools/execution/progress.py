"""How long-running library calls report progress without printing.

A library function takes `progress: Progress | None`; the CLI passes a bar that draws on
stderr, pipelines pass their own object or nothing.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """What a long call reports: `start(total_bytes, label)`, `advance(bytes)` as work is
    done (inside large tensors, not only per file), `finish()`. Any object with these
    three methods will do (a tqdm wrapper, a logger); None means no reporting."""

    def start(self, total: int, label: str) -> None: ...

    def advance(self, amount: int) -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    def start(self, total: int, label: str) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass

    def finish(self) -> None:
        pass


def or_null(progress: Progress | None) -> Progress:
    return progress if progress is not None else NullProgress()
