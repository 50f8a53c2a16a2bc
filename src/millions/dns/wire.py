"""Hand-written DNS wire helpers for the hot path; dnspython does everything else.

Parsing and rendering every message with dnspython costs some 200 microseconds per
query, which caps a Python server at a small fraction of gdnsd's rate (see DESIGN.md).
Nearly all real queries have one plain shape, so `simple_question_end` recognises exactly
that shape (one question, no other records except an EDNS OPT record with at most a
Client Subnet option, no name compression) with a few byte comparisons. Such a query's
answer depends only on its bytes after the ID and on the client's region, so the server
renders it once with dnspython and afterwards only patches the ID and the question's
letter case (`patch_reply`): about 3 microseconds. A query spelled exactly as one seen
before is cheaper still: the responder looks up its bytes after the ID and only
prepends the ID. Anything else, malformed or not,
takes the dnspython path. `header_reply` answers packets that dnspython cannot parse but
whose header can be read (FORMERR, NOTIMP).
"""

from __future__ import annotations

HEADER_BYTES = 12
#: A root-named OPT record with no options: name 0, type 41, class, TTL, RDLENGTH 0.
_OPT_RECORD_BYTES = 11
_ECS_OPTION_CODE = b"\x00\x08"
_QR = 0x80  # in the first flags byte
_OPCODE_MASK = 0x78
_RD = 0x01


def simple_question_end(wire: bytes) -> int:
    """The offset just past the question of a plain standard query, else 0.

    Plain: QR and TC clear, opcode QUERY, RCODE 0, Z clear, exactly one question with an
    uncompressed name, no answer or authority records, and either no additional record
    or one EDNS version 0 OPT record that ends the packet, with no option or only a
    Client Subnet option (whose bytes then become part of the cache key, so each client
    network gets its own template; the dnspython path validates it)."""
    size = len(wire)
    if (
        size < 17
        or wire[2] & 0xFA  # QR, opcode and TC clear (AA and RD may be set)
        or wire[3] & 0x4F  # Z and RCODE clear (AD and CD may be set)
        or wire[4:10] != b"\x00\x01\x00\x00\x00\x00"
        or wire[10]
        or wire[11] > 1
    ):
        return 0
    offset = HEADER_BYTES
    label = wire[offset]
    while label:
        if label > 63:
            return 0
        offset += label + 1
        if offset >= size:
            return 0
        label = wire[offset]
    end = offset + 5
    if end - HEADER_BYTES > 259:  # a name longer than 255 bytes
        return 0
    if wire[11] == 0:
        return end if end == size else 0
    opt = wire[end:]
    if (
        len(opt) < _OPT_RECORD_BYTES
        or opt[0:3] != b"\x00\x00\x29"
        or opt[5:7] != b"\x00\x00"  # extended RCODE and version 0
        or opt[7] & 0x7F  # no flags but DO
        or opt[8]
    ):
        return 0
    rdata_length = (opt[9] << 8) | opt[10]
    if len(opt) != _OPT_RECORD_BYTES + rdata_length:
        return 0
    if rdata_length == 0:
        return end
    if opt[11:13] == _ECS_OPTION_CODE and (opt[13] << 8) | opt[14] == rdata_length - 4:
        return end
    return 0


def cache_key(wire: bytes, question_end: int) -> bytes:
    """What a plain query's answer depends on, apart from the client's region: the flags,
    the question with its name in lower case, and the OPT record (payload size, DO bit,
    Client Subnet)."""
    name_end = question_end - 4
    return wire[2:12] + wire[12:name_end].lower() + wire[name_end:]


def patch_reply(tail: bytes, wire: bytes, question_end: int) -> bytes:
    """`tail` (a reply rendered for a query with the same cache key, without its two-byte
    ID) as the reply to `wire`: its ID, and its question spelled as the client spelled
    it."""
    return wire[:2] + tail[:10] + wire[12:question_end] + tail[question_end - 2 :]


def header_reply(wire: bytes, rcode: int) -> bytes:
    """A reply that is only a header: the query's ID, opcode and RD bit, and `rcode`."""
    flags = _QR | (wire[2] & (_OPCODE_MASK | _RD))
    return wire[:2] + bytes((flags, rcode & 0x0F)) + bytes(8)
