"""Tool calls in a reply: kept out of the streamed text, parsed at the end with mlx-lm's parsers.

A model that can call tools writes each call between its tokenizer's markers
(``tokenizer.tool_call_start`` / ``tool_call_end``: ``<tool_call>...</tool_call>`` for Qwen,
``[TOOL_CALLS]...`` for Mistral, ...). :class:`ToolCallSplitter` watches one reply's text with
mlx-lm's ``TextStateMachine`` (matching on text, so a marker split across tokens is held back
until it is known to be one) and sends on only the text outside the markers. When the reply
ends, each call's text goes to the model's own parser (``tokenizer.tool_parser``, from
``mlx_lm.tool_parsers``), which turns it into a name and arguments; each becomes a
:class:`~mlx_tui.core.chat_types.ToolCall` with an OpenAI-style id (``call_...``).

A call that the parser cannot read (cut short by ``max_tokens``, or not what the format
expects) is given back as text, markers included, so nothing the model wrote is lost.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any, Sequence

from ..chat_types import ToolCall

__all__ = ["ToolCallSplitter", "new_call_id"]

log = logging.getLogger("mlx_tui.engine")

_NORMAL, _TOOL = "normal", "tool"


def new_call_id() -> str:
    """A fresh tool-call id, in OpenAI's shape (``call_`` and 24 hex digits)."""
    return f"call_{uuid.uuid4().hex[:24]}"


class ToolCallSplitter:
    """Splits one reply's text into content and tool calls; owned by that reply's reader.

    ``tokenizer`` is mlx-lm's ``TokenizerWrapper`` of a model with ``has_tool_calling``;
    ``tools`` the tool definitions the request sent (some parsers read the parameter types
    from them). ``inside_call`` starts the reply inside a call: the prompt already ends with
    the start marker (a forced tool call).
    """

    def __init__(self, tokenizer: Any, tools: Sequence[dict[str, Any]] | None = None, *,
                 inside_call: bool = False) -> None:
        from mlx_lm.generate import TextStateMachine

        self._start: str = tokenizer.tool_call_start
        self._end: str = tokenizer.tool_call_end or ""
        self._parser = tokenizer.tool_parser
        self._tools = list(tools or ())
        # Only the tool markers are matched: reasoning text and other markers stay in the
        # content as the model wrote them. A format without an end marker (Mistral's) stays
        # in the call to the end of the reply, as mlx-lm's server reads it.
        machine = TextStateMachine({
            _NORMAL: [(self._start, _TOOL)],
            _TOOL: [(self._end, _NORMAL)] if self._end else [],
        })
        self._state = machine.make_state(_TOOL if inside_call else _NORMAL)
        self._calls: list[str] = []  # the text of each finished call
        self._open: str | None = "" if inside_call else None  # the call being written
        self._finished = False

    @property
    def in_call(self) -> bool:
        """Whether the text seen so far ends inside a tool call."""
        return self._open is not None

    def feed(self, text: str) -> str:
        """The part of ``text`` (with what was held back) that is content, to show now."""
        from mlx_lm.generate import TextStateMachine

        if not text or self._finished:
            return ""
        self._state, segments = TextStateMachine.split(self._state, text)
        return self._take(segments)

    def _take(self, segments: list[tuple[str | None, str]]) -> str:
        shown: list[str] = []
        for i, (state, piece) in enumerate(segments):
            last = i == len(segments) - 1
            if state == _TOOL:
                self._open = (self._open or "") + piece
                if not last:  # the end marker followed: the call is complete
                    self._calls.append(self._open)
                    self._open = None
            else:
                shown.append(piece)
                if not last:  # a start marker followed
                    self._open = ""
        return "".join(shown)

    def finish(self) -> tuple[str, tuple[ToolCall, ...]]:
        """At the end of the reply: the content still held back (the reply ended on what
        might have begun a marker), and the parsed calls. A call that cannot be parsed comes
        back as text. (Stop strings were cut by the worker before this saw the text.)"""
        from mlx_lm.generate import TextStateMachine

        if self._finished:
            return "", ()
        self._finished = True
        self._state, held, _ = TextStateMachine.flush(self._state)
        text = ""
        if self._open is not None:
            self._calls.append(self._open + held)
            self._open = None
        else:
            text = held
        calls: list[ToolCall] = []
        unread: list[str] = []
        for raw in self._calls:
            parsed = self._parse(raw)
            if parsed is None:
                unread.append(f"{self._start}{raw}{self._end}")
            else:
                calls.extend(parsed)
        return text + "".join(unread), tuple(calls)

    def _parse(self, raw: str) -> list[ToolCall] | None:
        try:
            parsed = self._parser(raw, self._tools or None)
        except Exception as exc:  # noqa: BLE001 - any parser failure: the text is kept
            log.warning("could not parse a tool call (%s: %s); it is returned as text",
                        type(exc).__name__, exc)
            return None
        items = parsed if isinstance(parsed, list) else [parsed]
        calls = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                log.warning("a tool call without a name (%r); it is returned as text", item)
                return None
            arguments = item.get("arguments", {})
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments, ensure_ascii=False)
            call_id = item.get("id")
            calls.append(ToolCall(call_id if isinstance(call_id, str) and call_id else new_call_id(),
                                  item["name"], arguments))
        return calls
