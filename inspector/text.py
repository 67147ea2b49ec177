"""Text for terminals and text logs: control characters escaped, every printable character left as it is.

File names, notes and reviewer names come from outside; printed raw, a newline in a name forges a log line and
an ESC sequence drives the terminal. `escape_controls` turns C0 and C1 control characters, DEL, the Unicode line
and paragraph separators, bidirectional controls (which reorder what a terminal shows) and lone surrogates (which
cannot be encoded) into backslash escapes, so that every record stays one line and reads as what it is. JSON
output needs none of this: `json.dumps` escapes them already.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(match: re.Match[str]) -> str:
    """The escape of one unsafe character: \\n, \\r, \\t, \\xNN below U+0100, else \\uNNNN."""
    char = match.group()
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """`text` with control, line-separator and bidi-override characters escaped (\\n, \\x1b, \\u202e); the rest,
    printable non-ASCII included, unchanged. Escaping twice gives the same result as once."""
    return _UNSAFE.sub(_escape_one, text)
