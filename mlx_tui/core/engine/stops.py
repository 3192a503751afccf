"""Stop strings over streamed text: hold back what may be the start of one, cut at a match.

A stop string can span token boundaries ("\\n\\nUser" arriving as "\\n", "\\nUs", "er"), so
matching is on text: :meth:`StopMatcher.feed` returns the text that can safely be shown and
whether a stop string completed (the text before it is shown; it and what follows are not).
"""

from __future__ import annotations

__all__ = ["StopMatcher"]


class StopMatcher:
    """Watches one reply's text for any of ``stops``; owned by one request."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._longest = max((len(s) for s in self._stops), default=0)
        self._held = ""
        self.stopped = False
        self.matched: str | None = None  # the stop string that ended the reply

    def feed(self, text: str) -> str:
        """The part of ``held + text`` that cannot be the start of a stop string, to show now.

        After a match, :attr:`stopped` is True and everything from the stop string on is gone.
        """
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buffer = self._held + text
        hits = [(i, s) for s in self._stops if (i := buffer.find(s)) >= 0]
        cut = min(hits)[0] if hits else -1
        if cut >= 0:
            self.stopped = True
            self.matched = min(hits)[1]
            self._held = ""
            return buffer[:cut]
        keep = self._partial_suffix(buffer)
        self._held = buffer[len(buffer) - keep:] if keep else ""
        return buffer[:len(buffer) - keep]

    def flush(self) -> str:
        """What is still held back, at the end of a reply that stopped for another reason."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _partial_suffix(self, buffer: str) -> int:
        """Length of the longest end of ``buffer`` that begins some stop string."""
        for size in range(min(self._longest - 1, len(buffer)), 0, -1):
            tail = buffer[-size:]
            if any(s.startswith(tail) for s in self._stops):
                return size
        return 0
