"""One context-manager shape for everything that starts and stops (servers, processes, stacks)."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Service:
    """``with x:`` means ``x.start()`` … ``x.stop()``. Subclasses implement both."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
