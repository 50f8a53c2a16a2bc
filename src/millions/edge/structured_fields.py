"""Structured Field Dictionary parsing (RFC 9651, which obsoletes RFC 8941), §4.2.2.

Targeted cache-control fields such as CDN-Cache-Control are Dictionaries (RFC 9213 §2.1),
and a field that fails to parse must be ignored as a whole, so the parser must be strict.
The `http-sf` package does this too, but it is not a dependency of millions and the edge
needs only Dictionary parsing; this module follows the RFC's parsing algorithm step by step
so it can be checked against the text.

Values come back as Python types: int, float (Decimal), `SFString` (String), `Token`,
bytes (Byte Sequence), bool, `SFDate` (Date), or a list of `(value, params)` for an Inner
List. Parameters are a dict of key → bare value.
"""

from __future__ import annotations

import base64
import binascii
import string

Params = dict[str, object]
Member = tuple[object, Params]


class StructuredFieldError(ValueError):
    """The field value is not a valid Structured Field."""


class Token(str):
    """An sf-token (distinct from a String)."""

    __slots__ = ()


class SFString(str):
    """An sf-string (distinct from a Token)."""

    __slots__ = ()


class SFDate(int):
    """An sf-date (RFC 9651 §3.3.7): seconds since the epoch."""

    __slots__ = ()


_LCALPHA = frozenset(string.ascii_lowercase)
_KEY_FIRST = _LCALPHA | {"*"}
_KEY_CHARS = _LCALPHA | frozenset(string.digits) | {"_", "-", ".", "*"}
_TCHAR = frozenset("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits)
_TOKEN_CHARS = _TCHAR | {":", "/"}
_DIGITS = frozenset(string.digits)
_MAX_FIELD_LENGTH = 16 * 1024


class _Parser:
    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def fail(self, what: str) -> StructuredFieldError:
        return StructuredFieldError(f"{what} at offset {self.pos}")

    def skip_sp(self) -> None:
        while self.peek() == " ":
            self.pos += 1

    def skip_ows(self) -> None:
        while self.peek() in (" ", "\t"):
            self.pos += 1

    def dictionary(self) -> dict[str, Member]:
        result: dict[str, Member] = {}
        while self.pos < len(self.text):
            key = self.key()
            if self.peek() == "=":
                self.pos += 1
                member = self.item_or_inner_list()
            else:
                member = (True, self.parameters())
            result.pop(key, None)  # a repeated key keeps its last value (§4.2.2)
            result[key] = member
            self.skip_ows()
            if self.pos >= len(self.text):
                return result
            if self.peek() != ",":
                raise self.fail("expected ','")
            self.pos += 1
            self.skip_ows()
            if self.pos >= len(self.text):
                raise self.fail("trailing comma")
        return result

    def item_or_inner_list(self) -> Member:
        if self.peek() == "(":
            return self.inner_list()
        return self.bare_item(), self.parameters()

    def inner_list(self) -> Member:
        self.pos += 1  # "("
        items: list[Member] = []
        while self.pos < len(self.text):
            self.skip_sp()
            if self.peek() == ")":
                self.pos += 1
                return items, self.parameters()
            items.append((self.bare_item(), self.parameters()))
            if self.peek() not in (" ", ")"):
                raise self.fail("expected ' ' or ')' in inner list")
        raise self.fail("unterminated inner list")

    def parameters(self) -> Params:
        params: Params = {}
        while self.peek() == ";":
            self.pos += 1
            self.skip_sp()
            key = self.key()
            value: object = True
            if self.peek() == "=":
                self.pos += 1
                value = self.bare_item()
            params.pop(key, None)
            params[key] = value
        return params

    def key(self) -> str:
        if self.peek() not in _KEY_FIRST or not self.peek():
            raise self.fail("invalid key")
        start = self.pos
        while self.peek() in _KEY_CHARS and self.peek():
            self.pos += 1
        return self.text[start : self.pos]

    def bare_item(self) -> object:
        char = self.peek()
        if char == "-" or (char and char in _DIGITS):
            return self.number()
        if char == '"':
            return self.string()
        if char == "*" or (char and char in string.ascii_letters):
            return self.token()
        if char == ":":
            return self.byte_sequence()
        if char == "?":
            return self.boolean()
        if char == "@":
            self.pos += 1
            number = self.number()
            if not isinstance(number, int):
                raise self.fail("date must be an integer")
            return SFDate(number)
        raise self.fail("unknown item type")

    def number(self) -> int | float:
        sign = 1
        if self.peek() == "-":
            sign = -1
            self.pos += 1
        start = self.pos
        is_decimal = False
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in _DIGITS:
                self.pos += 1
            elif char == "." and not is_decimal:
                if self.pos - start > 12:
                    raise self.fail("decimal integer part too long")
                is_decimal = True
                self.pos += 1
            else:
                break
            if not is_decimal and self.pos - start > 15:
                raise self.fail("integer too long")
            if is_decimal and self.pos - start > 16:
                raise self.fail("decimal too long")
        number = self.text[start : self.pos]
        if not number or not number[0].isdigit():
            raise self.fail("expected a digit")
        if not is_decimal:
            return sign * int(number)
        if number.endswith("."):
            raise self.fail("decimal ends with '.'")
        if len(number) - number.index(".") - 1 > 3:
            raise self.fail("more than 3 fractional digits")
        return sign * float(number)

    def string(self) -> SFString:
        self.pos += 1  # opening quote
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == "\\":
                if self.pos >= len(self.text):
                    raise self.fail("unterminated escape")
                escaped = self.text[self.pos]
                self.pos += 1
                if escaped not in ('"', "\\"):
                    raise self.fail("invalid escape")
                out.append(escaped)
            elif char == '"':
                return SFString("".join(out))
            elif not " " <= char <= "~":
                raise self.fail("invalid string character")
            else:
                out.append(char)
        raise self.fail("unterminated string")

    def token(self) -> Token:
        start = self.pos
        self.pos += 1
        while self.peek() in _TOKEN_CHARS and self.peek():
            self.pos += 1
        return Token(self.text[start : self.pos])

    def byte_sequence(self) -> bytes:
        self.pos += 1
        end = self.text.find(":", self.pos)
        if end < 0:
            raise self.fail("unterminated byte sequence")
        encoded = self.text[self.pos : end]
        self.pos = end + 1
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as error:
            raise self.fail("invalid base64") from error

    def boolean(self) -> bool:
        self.pos += 1
        char = self.peek()
        if char not in ("0", "1") or not char:
            raise self.fail("invalid boolean")
        self.pos += 1
        return char == "1"


def parse_dictionary(value: bytes) -> dict[str, Member]:
    """Parse a Dictionary field value (RFC 9651 §4.2.2): key → (value, parameters).

    Raises StructuredFieldError on any deviation from the grammar.
    """
    if len(value) > _MAX_FIELD_LENGTH:
        raise StructuredFieldError("field too long")
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError as error:
        raise StructuredFieldError("non-ASCII field value") from error
    parser = _Parser(text.strip(" "))
    return parser.dictionary()
