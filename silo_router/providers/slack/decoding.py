"""Decode the two encodings of a Slack body once each: the urlencoded form and JSON.

A form is split and percent-decoded field by field, as ``urllib.parse.parse_qs`` does
with ``strict_parsing`` (every field needs a ``=``, every escape must decode as UTF-8),
but the escapes of a field are decoded in C (:func:`unquote_plus`). JSON is decoded by
the standard library, and its nesting is measured on the text (:func:`text_depth`),
which costs a few string operations instead of a walk over every decoded value.
"""

from __future__ import annotations

import binascii
import json
from typing import Any
from urllib.parse import unquote

from silo_router.exceptions import MalformedRequest

#: More form fields than any Slack request carries; a guard against abuse.
MAX_FORM_FIELDS = 1000

#: Deepest JSON nesting accepted (Slack's own payloads stay under 20). Far below
#: Python's recursion limit, so a region re-parsing inside Django, Celery and Sentry
#: frames parses every body that control accepted.
MAX_JSON_DEPTH = 64

#: Outside its strings a JSON text is ASCII: keep its brackets, objects' and arrays' alike, and nothing else.
_BRACKETS_ONLY = str.maketrans("{}", "[]", "".join(chr(code) for code in range(128) if chr(code) not in "[]{}"))


def decode_form(text: str) -> dict[str, str]:
    """The fields of an urlencoded form, the first value of each name (as ``parse_qs`` would give).

    Raises ``MalformedRequest`` (``malformed_form``) for more than ``MAX_FORM_FIELDS``
    fields, a field without ``=`` (an empty one included) or an escape that is not UTF-8.
    """
    if not text:
        return {}
    if text.count("&") >= MAX_FORM_FIELDS:
        raise _malformed_form()
    form: dict[str, str] = {}
    try:
        for field in text.split("&"):
            name, equals, value = field.partition("=")
            if not equals:
                raise _malformed_form()
            form.setdefault(unquote_plus(name), unquote_plus(value))
    except UnicodeDecodeError:
        raise _malformed_form() from None
    return form


def unquote_plus(text: str) -> str:
    """``text`` with ``+`` as a space and ``%XX`` escapes decoded as UTF-8 (``UnicodeDecodeError`` if not).

    The same result as ``urllib.parse.unquote(text.replace("+", " "), errors="strict")``.
    An ASCII text whose escapes are all well formed (what Slack sends) is decoded by
    ``binascii.a2b_qp``, quoted-printable's decoder in C: ``%`` becomes ``=``, the
    escape character of that encoding. Whether every escape was well formed shows in
    the length (each one shortens the text by two; anything else a ``=`` starts there
    shortens it less); a text with a ``=``, a line break or a malformed escape goes to
    ``unquote``.
    """
    text = text.replace("+", " ")
    escapes = text.count("%")
    if not escapes:
        return text
    if text.isascii() and "=" not in text and "\n" not in text and "\r" not in text:
        decoded = binascii.a2b_qp(text.replace("%", "="))
        if len(decoded) == len(text) - 2 * escapes:
            return decoded.decode("utf-8")
    return unquote(text, errors="strict")


def load_json_object(text: str, *, reason: str, what: str) -> dict[str, Any]:
    """Decode ``text`` as a JSON object nested at most ``MAX_JSON_DEPTH`` deep.

    Raises ``MalformedRequest``: ``reason`` for anything but a JSON object, ``too_deep``
    for one nested deeper.
    """
    try:
        value = json.loads(text)
    except RecursionError:
        raise too_deep(what) from None
    except ValueError:
        raise MalformedRequest(f"The {what} is not valid JSON.", reason=reason) from None
    if not isinstance(value, dict):
        raise MalformedRequest(f"The {what} is not a JSON object.", reason=reason)
    # Fewer brackets than the limit cannot nest past it, whatever strings hold them.
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and text_depth(text) > MAX_JSON_DEPTH:
        raise too_deep(what)
    return value


def text_depth(text: str, *, limit: int = MAX_JSON_DEPTH) -> int:
    """How deeply the valid JSON ``text`` nests objects and arrays (a scalar is 0), counting to ``limit + 1``.

    The same figure as :func:`json_depth` of the decoded value, read off the text: the
    strings are removed (escaped backslashes first, then escaped quotes, so that every
    quote left delimits a string), then the brackets outside them are peeled, each
    round removing every empty pair, so the number of rounds is the depth. The value of
    a duplicated key that decoding drops still counts: ``json.loads`` recursed through it.
    """
    unescaped = text.replace("\\\\", "").replace('\\"', "") if "\\" in text else text
    outside_strings = "".join(unescaped.split('"')[::2])
    brackets = outside_strings.translate(_BRACKETS_ONLY)
    depth = 0
    while brackets and depth <= limit:
        brackets = brackets.replace("[]", "")
        depth += 1
    return depth


def json_depth(value: Any) -> int:
    """How deeply the decoded ``value`` nests objects and arrays (a scalar is 0), without recursion."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def too_deep(what: str) -> MalformedRequest:
    """The error for JSON nested past ``MAX_JSON_DEPTH``."""
    return MalformedRequest(f"The {what} nests JSON deeper than {MAX_JSON_DEPTH} levels.", reason="too_deep")


def _malformed_form() -> MalformedRequest:
    return MalformedRequest("The request body is not a valid urlencoded form.", reason="malformed_form")
