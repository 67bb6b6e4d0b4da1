"""Lenient parsing of a JSON document still being generated: what it says so far, so a streamed answer can
be shown while it is written. An open string is closed where it stops; a member or element not yet readable
(a key without its value, half a `true` or a number) is left out; open arrays and objects are closed."""

import json
import re
from typing import Any

# A \\u escape at the end of an unfinished string (the backslashes before it say whether it is one).
UNICODE_TAIL = re.compile(r"(\\+)u([0-9a-fA-F]{0,4})$")


class _Level:
    __slots__ = ("kind", "phase", "start")

    def __init__(self, kind: str, start: int) -> None:
        self.kind = kind  # '{' or '['
        self.start = start  # where the current member or element begins
        self.phase = "key" if kind == "{" else "value"  # key, colon, value, after


def parse_partial(text: str) -> Any:
    """The value `text` holds so far, or None when nothing is readable yet (or it is not JSON at all)."""
    return PartialJSON().feed(text)


class PartialJSON:
    """`parse_partial` of a text that grows: each `feed` scans only the new characters, so a streamed answer
    costs its length once, not once per delta."""

    def __init__(self) -> None:
        self.text = ""
        self.stack: list[_Level] = []
        self.in_string = self.is_key = self.escaped = False
        self.string_start = 0
        self.begun = False
        self.done: Any = None  # the whole document, once it closed
        self.dead = False  # not JSON, or text after the document

    def feed(self, more: str) -> Any:
        """The value of everything fed so far (None: nothing readable yet)."""
        self.scan(more)
        return self.value()

    def value(self) -> Any:
        """The value of everything scanned so far (None: nothing readable yet)."""
        if self.dead or self.done is not None:
            return self.done
        return self._closed() if self.stack else None

    def scan(self, more: str) -> None:
        """Take in more of the text without making its value (`value` does, when it is wanted)."""
        at = len(self.text)
        self.text += more
        if self.dead or self.done is not None:
            return
        stack = self.stack
        for i in range(at, len(self.text)):
            char = self.text[i]
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
                    if stack:
                        stack[-1].phase = "colon" if self.is_key else "after"
                continue
            if char.isspace():
                continue
            top = stack[-1] if stack else None
            if not self.begun:
                if char not in "{[":
                    self.dead = True  # prose, or a bare value: nothing a structured answer can show
                    return
                self.begun = True
            if char in "{[":
                stack.append(_Level(char, i + 1))
            elif char in "}]":
                stack.pop()
                if not stack:
                    self.done = _load(self.text[:i + 1])
                    self.dead = self.done is None
                    return
                stack[-1].phase = "after"
            elif char == '"':
                self.in_string, self.string_start = True, i
                self.is_key = top is not None and top.kind == "{" and top.phase == "key"
            elif char == ":" and top is not None:
                top.phase = "value"
            elif char == "," and top is not None:
                top.start, top.phase = i + 1, "key" if top.kind == "{" else "value"
            elif top is not None:
                top.phase = "after"  # a literal or number, maybe unfinished (checked in _closed)

    def _closed(self) -> Any:
        text, top = self.text, self.stack[-1]
        cut = text
        if self.in_string:
            if self.is_key:
                cut = text[:top.start]
            else:
                cut = text[:self.string_start] + _finished(text[self.string_start:], self.escaped) + '"'
        else:
            tail = re.search(r"[^\s{}\[\],:\"]+$", text.rstrip()[-64:])  # an unfinished literal or number?
            if top.phase in ("colon", "value") and top.kind == "{":
                cut = text[:top.start]  # a key without its value
            elif tail is not None and not _complete(tail.group()):
                cut = text[:top.start]
        cut = cut.rstrip()
        if cut.endswith(","):
            cut = cut[:-1]
        return _load(cut + "".join("}" if level.kind == "{" else "]" for level in reversed(self.stack)))


def _finished(string: str, escaped: bool) -> str:
    """An unfinished string less any end that would change meaning once finished: half an escape, or a high
    surrogate waiting for its pair."""
    if escaped:
        string = string[:-1]
    while (tail := UNICODE_TAIL.search(string)) is not None and len(tail.group(1)) % 2 == 1:
        digits = tail.group(2)
        if len(digits) == 4 and not 0xD800 <= int(digits, 16) <= 0xDBFF:
            break
        string = string[:tail.start() + len(tail.group(1)) - 1]
    return string


def _complete(token: str) -> bool:
    try:
        json.loads(token)
    except ValueError:
        return False
    return True


def _load(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
