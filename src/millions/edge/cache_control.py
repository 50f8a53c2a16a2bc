"""Cache-Control (RFC 9111 §5.2) and targeted cache-control fields (RFC 9213).

`parse_cache_control` reads the classic `token[=token|quoted-string]` list syntax of
RFC 9111 §5.2 (with RFC 9110 §5.6 lists and quoted strings) and RFC 5861's
stale-while-revalidate / stale-if-error. `parse_targeted_cache_control` reads a targeted
field such as CDN-Cache-Control, which RFC 9213 §2.1 defines as a Structured Field
Dictionary: same directives, stricter syntax, and a field that fails to parse is ignored.

Error handling, chosen to be safe for a shared cache and to match the RFC where it speaks:

- directive names are case-insensitive (§5.2); unknown directives are ignored (§5.2.3);
- both token and quoted-string arguments are accepted (§5.2), e.g. `max-age="60"`;
- a member that is not `token[=...]` (such as `max-age =60`) is ignored as a whole;
- an invalid max-age or s-maxage (`max-age=abc`, `max-age=-1`, `max-age=1.5`) counts as 0,
  i.e. the response is stale (§4.2.1 "considered stale"); other invalid numbers are ignored;
- numbers larger than 2^31 are clamped to 2^31 (§1.2.2);
- a directive given twice keeps its first occurrence (§4.2.1 allows "the first occurrence");
  `private` and `no-cache` take the union of their field lists, and their unqualified form
  wins over any qualified one (the more restrictive reading);
- a field-list argument that lists nothing (`private=""`) counts as unqualified.

The parse of a given header value is cached (`functools.lru_cache`): origin responses repeat
a handful of Cache-Control values, so each distinct value is parsed once per process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from millions.edge.headers import split_list, unquote
from millions.edge.structured_fields import SFString, StructuredFieldError, parse_dictionary

#: RFC 9111 §1.2.2: delta-seconds beyond what a cache can represent count as 2^31.
DELTA_SECONDS_MAX = 2**31

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PARSE_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class CacheControl:
    """Parsed cache directives, request or response (absent numbers are None).

    `private` / `no_cache` are the unqualified forms; `private_fields` / `no_cache_fields`
    hold the field names of the qualified forms (RFC 9111 §5.2.2.4, §5.2.2.7), lower-case.
    A bare request `max-stale` (any staleness is acceptable) is `max_stale == 2**31`.
    """

    max_age: int | None = None
    s_maxage: int | None = None
    max_stale: int | None = None
    min_fresh: int | None = None
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None
    no_store: bool = False
    no_cache: bool = False
    no_cache_fields: frozenset[bytes] = frozenset()
    private: bool = False
    private_fields: frozenset[bytes] = frozenset()
    public: bool = False
    must_revalidate: bool = False
    proxy_revalidate: bool = False
    immutable: bool = False
    only_if_cached: bool = False
    no_transform: bool = False
    must_understand: bool = False


#: No directives at all (what an absent Cache-Control field means).
NO_DIRECTIVES = CacheControl()

_NUMERIC = {
    b"max-age": "max_age",
    b"s-maxage": "s_maxage",
    b"max-stale": "max_stale",
    b"min-fresh": "min_fresh",
    b"stale-while-revalidate": "stale_while_revalidate",
    b"stale-if-error": "stale_if_error",
}
#: Directives whose invalid value makes the response stale rather than being ignored.
_INVALID_MEANS_STALE = frozenset({b"max-age", b"s-maxage"})
_FLAGS = {
    b"public": "public",
    b"no-store": "no_store",
    b"must-revalidate": "must_revalidate",
    b"proxy-revalidate": "proxy_revalidate",
    b"immutable": "immutable",
    b"only-if-cached": "only_if_cached",
    b"no-transform": "no_transform",
    b"must-understand": "must_understand",
}
_FIELD_LISTS = {b"private": "private", b"no-cache": "no_cache"}


def parse_delta_seconds(value: bytes) -> int | None:
    """delta-seconds (RFC 9111 §1.2.2): 1*DIGIT, clamped to 2^31; None if not digits."""
    if not value or not value.isdigit():
        return None
    if len(value) > 10:  # more than 10 digits is always beyond 2^31; skip the int() work
        return DELTA_SECONDS_MAX
    return min(int(value), DELTA_SECONDS_MAX)


def _field_names(argument: bytes) -> frozenset[bytes]:
    return frozenset(name.lower() for name in split_list(argument))


class _Builder:
    """Collects directives with the duplicate rules from the module docstring."""

    __slots__ = ("fields", "flags", "numbers", "unqualified")

    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}
        self.flags: set[str] = set()
        self.fields: dict[str, set[bytes]] = {"private": set(), "no_cache": set()}
        self.unqualified: set[str] = set()

    def number(self, attribute: str, seconds: int) -> None:
        self.numbers.setdefault(attribute, seconds)

    def field_list(self, attribute: str, names: frozenset[bytes] | None) -> None:
        if names:
            self.fields[attribute].update(names)
        else:
            self.unqualified.add(attribute)

    def build(self) -> CacheControl:
        private = "private" in self.unqualified
        no_cache = "no_cache" in self.unqualified
        numbers = self.numbers
        flags = self.flags
        return CacheControl(
            max_age=numbers.get("max_age"),
            s_maxage=numbers.get("s_maxage"),
            max_stale=numbers.get("max_stale"),
            min_fresh=numbers.get("min_fresh"),
            stale_while_revalidate=numbers.get("stale_while_revalidate"),
            stale_if_error=numbers.get("stale_if_error"),
            no_store="no_store" in flags,
            public="public" in flags,
            must_revalidate="must_revalidate" in flags,
            proxy_revalidate="proxy_revalidate" in flags,
            immutable="immutable" in flags,
            only_if_cached="only_if_cached" in flags,
            no_transform="no_transform" in flags,
            must_understand="must_understand" in flags,
            private=private,
            private_fields=frozenset() if private else frozenset(self.fields["private"]),
            no_cache=no_cache,
            no_cache_fields=frozenset() if no_cache else frozenset(self.fields["no_cache"]),
        )


@lru_cache(maxsize=_PARSE_CACHE_SIZE)
def parse_cache_control(value: bytes) -> CacheControl:
    """Directives of a Cache-Control value (all lines combined with ", "). Never raises."""
    builder = _Builder()
    for member in split_list(value):
        name, has_argument, raw_argument = member.partition(b"=")
        if _TOKEN.fullmatch(name) is None:
            continue
        name = name.lower()
        argument: bytes | None = None
        if has_argument:
            if raw_argument[:1] == b'"':
                argument = unquote(raw_argument)
            elif _TOKEN.fullmatch(raw_argument) is not None:
                argument = raw_argument
        attribute = _NUMERIC.get(name)
        if attribute is not None:
            if name == b"max-stale" and not has_argument:
                builder.number(attribute, DELTA_SECONDS_MAX)
                continue
            seconds = parse_delta_seconds(argument) if argument is not None else None
            if seconds is not None:
                builder.number(attribute, seconds)
            elif name in _INVALID_MEANS_STALE:
                builder.number(attribute, 0)
            continue
        attribute = _FLAGS.get(name)
        if attribute is not None:
            builder.flags.add(attribute)
            continue
        attribute = _FIELD_LISTS.get(name)
        if attribute is not None:
            names = _field_names(argument) if argument is not None else None
            builder.field_list(attribute, names)
    return builder.build()


@lru_cache(maxsize=_PARSE_CACHE_SIZE)
def parse_targeted_cache_control(value: bytes) -> CacheControl | None:
    """Directives of a targeted field such as CDN-Cache-Control (RFC 9213 §2.1), or None
    when the field must be ignored: empty, not a valid Dictionary, or a known directive
    with a value of the wrong type (`max-age="60"`, `max-age=-1`, `no-store=1`)."""
    try:
        members = parse_dictionary(value)
    except StructuredFieldError:
        return None
    if not members:
        return None
    builder = _Builder()
    for key, (item, _parameters) in members.items():
        name = key.encode("ascii")
        attribute = _NUMERIC.get(name)
        if attribute is not None:
            if type(item) is not int or item < 0:
                return None
            builder.number(attribute, min(item, DELTA_SECONDS_MAX))
            continue
        attribute = _FLAGS.get(name)
        if attribute is not None:
            if type(item) is not bool:
                return None
            if item:
                builder.flags.add(attribute)
            continue
        attribute = _FIELD_LISTS.get(name)
        if attribute is not None:
            if item is True:
                builder.field_list(attribute, None)
            elif isinstance(item, SFString):
                builder.field_list(attribute, _field_names(item.encode("ascii")) or None)
            elif item is not False:
                return None
    return builder.build()
