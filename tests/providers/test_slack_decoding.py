"""Slack bodies decode as the standard library decodes them: the form as ``parse_qs``, the depth as a walk.

The decoders take shortcuts (escapes decoded in C, depth read off the text); each is
checked here against the standard library's answer over many generated inputs, chosen
to hit the shortcuts' edges: ``%`` at the end or before a non-hex digit, ``=`` and line
breaks in a field, brackets, quotes and backslashes inside JSON strings.
"""

from __future__ import annotations

import json
import random
from typing import Any
from urllib.parse import parse_qs, quote, unquote

import pytest

from silo_router.exceptions import MalformedRequest
from silo_router.providers.slack.decoding import (
    MAX_FORM_FIELDS,
    MAX_JSON_DEPTH,
    decode_form,
    json_depth,
    load_json_object,
    text_depth,
    unquote_plus,
)

#: Characters a generated form field is made of: every one a shortcut treats apart.
FORM_ALPHABET = ["%", "%", "%", "2", "7", "B", "b", "f", "F", "g", "z", "0", "=", "+", " ", "a", "\n", "\r", "é", "~"]
#: Whole escapes, valid and not (a lone surrogate, bytes that are not UTF-8, NUL).
ESCAPES = ["%7B", "%7b", "%22", "%C3%A9", "%E2%80%8B", "%ED%A0%80", "%FF", "%C3", "%00", "%25", "%3D", "%26", "%2B"]


def reference_unquote(text: str) -> str:
    return unquote(text.replace("+", " "), errors="strict")


def decoded_or_error(decode: Any, text: str) -> Any:
    try:
        return decode(text)
    except UnicodeDecodeError:
        return UnicodeDecodeError


def generated_fields(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    fields = []
    for _ in range(count):
        length = rng.randrange(12)
        parts = [rng.choice(ESCAPES) if rng.random() < 0.3 else rng.choice(FORM_ALPHABET) for _ in range(length)]
        fields.append("".join(parts))
    return fields


EDGE_FIELDS = [
    "",
    "%",
    "%4",
    "%41",
    "%%41",
    "%%",
    "41%",
    "%=41",
    "%\n41",
    "%\r\n41",
    "%\rxx\n41",
    "a=b",
    "%zz",
    "%4g",
    "%g4",
    "%7B%22a%22%3A1%7D",
    "%C3%A9",
    "é%41",
    "%ED%A0%80",
    "%FF",
    "a+b%2Bc",
    "%00",
    "_%5F_",
]


@pytest.mark.parametrize("text", EDGE_FIELDS)
def test_unquote_plus_at_the_edges_is_urllibs(text: str) -> None:
    assert decoded_or_error(unquote_plus, text) == decoded_or_error(reference_unquote, text)


def test_unquote_plus_is_urllibs_on_generated_fields() -> None:
    for text in generated_fields(20_000, seed=1):
        assert decoded_or_error(unquote_plus, text) == decoded_or_error(reference_unquote, text), repr(text)


def test_unquote_plus_decodes_a_whole_quoted_payload() -> None:
    payload = json.dumps({"type": "block_actions", "text": 'caf\u00e9 [x] {y} "q" \\ 100% = & +', "n": [1, 2]})
    assert unquote_plus(quote(payload, safe="")) == payload


def reference_form(text: str) -> dict[str, str] | type[ValueError]:
    """What the parser did before: ``parse_qs`` with strict parsing, the first value of each name."""
    try:
        fields = parse_qs(
            text, keep_blank_values=True, strict_parsing=True, errors="strict", max_num_fields=MAX_FORM_FIELDS
        )
    except ValueError:
        return ValueError
    return {name: values[0] for name, values in fields.items()}


def form_or_error(text: str) -> dict[str, str] | type[ValueError]:
    try:
        return decode_form(text)
    except MalformedRequest as exc:
        assert exc.reason == "malformed_form"
        return ValueError


EDGE_FORMS = [
    "",
    "&",
    "=",
    "a",
    "a=",
    "=a",
    "a=1&",
    "&a=1",
    "a=1&&b=2",
    "a=1&a=2",
    "a=1;b=2",
    "a==1",
    "a%3D1=2",
    "a=%FF",
    "%FF=a",
    "payload=%7B%7D&command=%2Fx",
    "command=/x+y&text=a+b%2Bc",
    "&".join(f"f{i}=1" for i in range(MAX_FORM_FIELDS)),
    "&".join(f"f{i}=1" for i in range(MAX_FORM_FIELDS + 1)),
    "&" * MAX_FORM_FIELDS,
]


@pytest.mark.parametrize("text", EDGE_FORMS, ids=lambda text: text[:30])
def test_decode_form_at_the_edges_is_parse_qs(text: str) -> None:
    assert form_or_error(text) == reference_form(text)


def test_decode_form_is_parse_qs_on_generated_forms() -> None:
    rng = random.Random(2)
    fields = generated_fields(6_000, seed=3)
    for _ in range(3_000):
        pieces = [rng.choice(fields) for _ in range(rng.randrange(1, 5))]
        named = [f"{rng.choice(['a', 'b', 'payload'])}={piece}" if rng.random() < 0.8 else piece for piece in pieces]
        text = "&".join(named)
        assert form_or_error(text) == reference_form(text), repr(text)


# -- JSON depth -------------------------------------------------------------------------------

#: Strings that look like structure: brackets, quotes and backslashes a text scan must see through.
TRICKY_STRINGS = [
    *("[", "]", "{", "}", '"', "\\", '\\"', '"[', '\\"]', "\\\\", '\\\\"['),
    *("[[[{{{", "}}]]", "", "\u00e9[", "\ud800"),
]


def generated_value(rng: random.Random, depth: int) -> Any:
    if depth <= 0 or rng.random() < 0.25:
        return rng.choice([0, -1.5, True, None, "x", *TRICKY_STRINGS, "".join(rng.choices(TRICKY_STRINGS, k=4))])
    if rng.random() < 0.5:
        return [generated_value(rng, depth - 1) for _ in range(rng.randrange(4))]
    keys = rng.choices(["a", "[", "}", '"', "\\", '\\"{', "b"], k=rng.randrange(4))
    return {key: generated_value(rng, depth - 1) for key in keys}


def test_text_depth_is_the_walks_depth_on_generated_json() -> None:
    rng = random.Random(4)
    for _ in range(3_000):
        value = generated_value(rng, rng.randrange(12))
        for text in (
            json.dumps(value),
            json.dumps(value, ensure_ascii=False),
            json.dumps(value, indent=1),
            json.dumps(value, separators=(",", ":")),
        ):
            assert text_depth(text) == json_depth(json.loads(text)), text


@pytest.mark.parametrize("depth", [0, 1, 2, 63, 64, 65, 66, 200])
def test_text_depth_of_nesting_counts_up_to_one_past_the_limit(depth: int) -> None:
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value, "s": "]]]}}}"}
    assert text_depth(json.dumps(value)) == min(depth, MAX_JSON_DEPTH + 1)


def test_brackets_inside_strings_never_count() -> None:
    """Many more brackets than the limit, all in strings (keys and values): depth 2."""
    body = {"type": "block_actions", "[" * 100: "{" * 100, "actions": ['\\"[' * 100]}
    assert load_json_object(json.dumps(body), reason="malformed_json", what="body")["type"] == "block_actions"


def test_structure_past_the_limit_is_too_deep_however_many_strings_surround_it() -> None:
    value: Any = 1
    for _ in range(MAX_JSON_DEPTH):
        value = ['"]}\\', value]
    with pytest.raises(MalformedRequest) as caught:
        load_json_object(json.dumps({"type": "x", "deep": value}), reason="malformed_json", what="body")
    assert caught.value.reason == "too_deep"


def test_nesting_under_a_duplicated_key_counts_though_decoding_drops_it() -> None:
    """``json.loads`` keeps the last value of a key but recurses through every one, as a region's parse
    would: the limit is on the text's nesting, so a first value nested past it is too deep."""
    deep = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    text = '{"type": "shortcut", "x": ' + deep + ', "x": 1}'
    assert json_depth(json.loads(text)) == 1
    with pytest.raises(MalformedRequest) as caught:
        load_json_object(text, reason="malformed_json", what="body")
    assert caught.value.reason == "too_deep"
