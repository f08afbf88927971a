"""The one check of a rule's ``match`` pattern (a glob, ``re:REGEX`` or a type), shared by the layer rules of the
model config and the ``ops:`` rules.

Example:
    >>> check_match("re:encoder\\\\..*", "match", "a glob, 're:REGEX' or a type")
    're:encoder\\\\..*'
    >>> check_match("re:(", "match", "a glob, 're:REGEX' or a type")
    Traceback (most recent call last):
    ValueError: match 're:(': bad regular expression: missing ), unterminated subpattern at position 0
"""

from __future__ import annotations

import re

__all__ = ["check_match"]


def check_match(pattern: str, label: str, forms: str) -> str:
    """``pattern`` when it can match (not empty; after ``re:``, a regular expression that compiles); else a
    ValueError that names it (``label``: what the field is called) and the valid ``forms``."""
    if not pattern.strip():
        raise ValueError(f"{label} must not be empty: {forms}")
    if pattern.startswith("re:"):
        try:
            re.compile(pattern[3:])
        except re.error as e:
            raise ValueError(f"{label} {pattern!r}: bad regular expression: {e}") from None
    return pattern
