"""``with`` support for the producers' resources that end with ``close()``."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Closing:
    """Closes on the way out of a ``with`` block; a block that raised calls :meth:`abort`
    instead, which is :meth:`close` unless the subclass has a quicker way out."""

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """End after a failure; by default the same as :meth:`close`."""
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
