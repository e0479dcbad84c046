"""The event stream of one environment: readers subscribe, the environment's flows emit typed records."""

from __future__ import annotations

from collections.abc import Callable

from .records import Event, Record

Reader = Callable[[Event], None]


class EventStream:
    def __init__(self) -> None:
        self._readers: list[Reader] = []

    def subscribe(self, reader: Reader) -> Callable[[], None]:
        """Add a reader; returns the function that removes it."""
        self._readers.append(reader)
        return lambda: self._readers.remove(reader) if reader in self._readers else None

    def emit(self, record: Record, at: float | None = None) -> Event:
        event = Event(record) if at is None else Event(record, at)
        for reader in list(self._readers):
            reader(event)
        return event
