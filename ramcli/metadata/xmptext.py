"""Another app's XMP sidecar, kept byte for byte: only the properties ramcli owns change.

exiv2 rewrites a sidecar by re-serialising the whole packet: Lightroom's ``crs:`` develop settings move
from attribute to element form or change order, namespaces are re-declared, the x:xmptk and the xpacket
padding change. Lightroom, darktable and digiKam own those files, and a diff of their sidecar should show
ramcli's keywords and nothing else (as ``png_others_kept``/``webp_others_kept`` do for chunks). So the
sidecar exiv2 rewrote serves only as the source of ramcli's properties' new text, spliced into the
original:

* every *managed* property (ramcli's keyword/caption fields and its provenance namespace) is cut out of
  the original where it is a property of a top-level ``rdf:Description`` (element form, or attribute form
  on the Description), together with the whitespace before it; a Description that held nothing but
  managed properties (the one a previous ramcli write added) goes whole;
* the managed properties as exiv2 serialised them are put back in one new ``rdf:Description`` (same
  ``rdf:about`` as the original's, declaring exactly the namespaces they need) just before
  ``</rdf:RDF>``. XMP allows any number of Descriptions about one resource; exiv2 and exiftool merge them.

Byte offsets come from expat (``CurrentByteIndex`` is where a tag's ``<`` is), and a start tag expat has
accepted is then lexed by the XML grammar of start tags only, to find its attributes' spans. Anything
unexpected (not well-formed, a DOCTYPE, no or several rdf:RDF, a top-level node that is not an
rdf:Description, non-UTF-8 text, a namespace clash) returns exiv2's rewrite unchanged: the safe fallback.
``sidecar_others_kept`` checks the splice with exiv2 itself before it is used.
"""

from __future__ import annotations

import xml.parsers.expat
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cache
from itertools import pairwise

import pyexiv2

from ramcli.metadata import provenance
from ramcli.metadata.fields import FIELDS

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
XML = "http://www.w3.org/XML/1998/namespace"
ANY = "*"  # a managed local name meaning "every property of this namespace"
# exiv2's URI for each prefix a style key uses ("Xmp.dc.subject"): exiv2's built-in table, plus ramcli's
# own namespace (registered in ``exiv``). tests/test_xmp_splice.py checks it against what exiv2 writes.
URIS = {
    "dc": "http://purl.org/dc/elements/1.1/",
    "lr": "http://ns.adobe.com/lightroom/1.0/",
    "digiKam": "http://www.digikam.org/ns/1.0/",
    "MicrosoftPhoto": "http://ns.microsoft.com/photo/1.0/",
    provenance.PREFIX: provenance.NAMESPACE,
}
# Other spellings of a URI in the wild: Windows and exiv2 end MicrosoftPhoto's with a slash, exiftool not.
_ALIASES = {"http://ns.microsoft.com/photo/1.0/": ("http://ns.microsoft.com/photo/1.0",)}
_WS = b" \t\r\n"

Name = tuple[str, str]  # (namespace URI, local name)


class Unsure(Exception):
    """The packet is not one this module can splice safely: use exiv2's output instead."""


@cache
def managed() -> frozenset[Name]:
    """The XMP properties ramcli owns in a sidecar: the XMP keys of every field's sidecar styles, under
    every spelling of their namespace URI, and all of ramcli's provenance namespace."""
    names: set[Name] = {(provenance.NAMESPACE, ANY)}
    for f in FIELDS:
        for s in f.styles_for("sidecar"):
            if s.block != "xmp":
                continue
            _, prefix, local = s.key.split(".", 2)
            uri = URIS[prefix]
            names.update((u, local) for u in (uri, *_ALIASES.get(uri, ())))
    return frozenset(names)


def managed_keys(names: Collection[Name] | None = None) -> tuple[str, ...]:
    """exiv2 keys (or key prefixes, ending in ".") of the managed properties, for reading them back."""
    by_uri = {u: p for p, uri in URIS.items() for u in (uri, *_ALIASES.get(uri, ()))}
    return tuple(sorted({f"Xmp.{by_uri[u]}." + ("" if local == ANY else local)
                         for u, local in (managed() if names is None else names) if u in by_uri}))


@dataclass
class _Prop:
    """One top-level property's text: ``lead`` (the whitespace before it) to ``end``."""

    name: Name
    lead: int
    start: int
    end: int
    attribute: bool
    needs: dict[str, str]  # prefix -> URI its text uses that are declared outside it


@dataclass
class _Description:
    """A top-level rdf:Description: its span, its raw rdf:about value, and what it holds."""

    lead: int
    start: int
    end: int = -1
    about: bytes | None = None
    indent: bytes = b""
    props: list[_Prop] = field(default_factory=list)
    others: bool = False  # holds something that is not a managed property


@dataclass
class _Packet:
    """Where an XMP packet's top-level properties are, by byte offset."""

    descriptions: list[_Description] = field(default_factory=list)
    rdf_prefix: str = ""  # the prefix the rdf:RDF element is written with
    rdf_scope: dict[str, str] = field(default_factory=dict)  # bindings in scope inside rdf:RDF
    rdf_end: int = -1  # the "<" of </rdf:RDF>


@dataclass
class _Frame:
    """An open element while parsing."""

    name: Name
    start: int
    tag_end: int
    empty: bool
    scope: dict[str, str]
    # "outer" (around rdf:RDF), "rdf", "description", "prop" (a managed top-level property), "inside" (in
    # one), "foreign" (another property, or in one)
    role: str
    declares: set[str]  # the prefixes this element declares
    prop: _Prop | None = None  # the top-level property this element is (part of)


def _start_tag(data: bytes, at: int) -> tuple[str, list[tuple[str, int, int]], int, bool]:
    """Lex the start tag expat reported at ``at``: its name, each attribute's (name, start, end) and the
    offset past the tag, and whether it is an empty-element tag. Expat accepted the tag, so it follows
    ``'<' Name (S Name S? '=' S? ('"' [^"]* '"' | "'" [^']* "'"))* S? '/'? '>'``."""
    if data[at:at + 1] != b"<":
        raise Unsure("no start tag where expat reported one")
    i = at + 1
    n = len(data)

    def skip_ws(i: int) -> int:
        while i < n and data[i] in _WS:
            i += 1
        return i

    def name_end(i: int) -> int:
        while i < n and data[i] not in _WS and data[i] not in b"=/>":
            i += 1
        return i

    j = name_end(i)
    name = data[i:j].decode("utf-8")
    attrs: list[tuple[str, int, int]] = []
    i = j
    while True:
        i = skip_ws(i)
        if data[i:i + 2] == b"/>":
            return name, attrs, i + 2, True
        if data[i:i + 1] == b">":
            return name, attrs, i + 1, False
        j = name_end(i)
        attr = data[i:j].decode("utf-8")
        k = skip_ws(j)
        if data[k:k + 1] != b"=":
            raise Unsure(f"odd attribute {attr!r}")
        k = skip_ws(k + 1)
        quote = data[k:k + 1]
        if quote not in (b'"', b"'"):
            raise Unsure(f"odd attribute value of {attr!r}")
        close = data.find(quote, k + 1)
        if close < 0:
            raise Unsure("unterminated attribute value")
        attrs.append((attr, i, close + 1))
        i = close + 1


def _lead(data: bytes, start: int) -> int:
    """Where the whitespace right before ``start`` begins (it goes with the property cut out)."""
    while start > 0 and data[start - 1] in _WS:
        start -= 1
    return start


def _resolve(qname: str, scope: dict[str, str], attribute: bool) -> tuple[str, Name]:
    """``qname``'s prefix and (URI, local name) in ``scope``; an unbound prefix is not XML we can splice."""
    prefix, _, local = qname.rpartition(":")
    if prefix == "xml":
        return prefix, (XML, local)
    if not prefix and attribute:
        return prefix, ("", local)
    if prefix not in scope:
        raise Unsure(f"unbound prefix in {qname!r}")
    return prefix, (scope[prefix], local)


def _parse(data: bytes, names: Collection[Name]) -> _Packet:
    """The top-level properties of ``data`` and where they are; raises ``Unsure`` when in doubt."""
    if b"\x00" in data[:4096] or data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise Unsure("not UTF-8")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise Unsure("not UTF-8") from None
    packet = _Packet()
    stack: list[_Frame] = []
    parser = xml.parsers.expat.ParserCreate()
    parser.ordered_attributes = True

    def is_managed(name: Name) -> bool:
        return name in names or (name[0], ANY) in names

    def doctype(*_: object) -> None:
        raise Unsure("a DOCTYPE (entities) in the packet")

    def start(qname: str, attributes: list[str]) -> None:
        at = parser.CurrentByteIndex
        lexed, spans, tag_end, empty = _start_tag(data, at)
        if lexed != qname or [a for a, _, _ in spans] != attributes[0::2]:
            raise Unsure("start tag lexed differently from expat")
        parent = stack[-1] if stack else None
        scope = dict(parent.scope) if parent else {}
        for a, value in zip(attributes[0::2], attributes[1::2], strict=True):
            if a == "xmlns" or a.startswith("xmlns:"):
                scope[a[6:]] = value
        prefix, name = _resolve(qname, scope, attribute=False)
        role = "outer"
        prop = None
        if parent is None or parent.role == "outer":
            if name == (RDF, "RDF"):
                if packet.rdf_prefix:
                    raise Unsure("several rdf:RDF")
                if not prefix:
                    raise Unsure("rdf:RDF without a prefix")
                role = "rdf"
                packet.rdf_prefix, packet.rdf_scope = prefix, scope
        elif parent.role == "rdf":
            if name != (RDF, "Description"):
                raise Unsure(f"a top-level {qname} node")
            role = "description"
            line = data.rfind(b"\n", 0, at) + 1
            desc = _Description(_lead(data, at), at, indent=data[line:at] if not data[line:at].strip() else b" ")
            for a, a_start, a_end in spans:
                if a == "xmlns" or a.startswith("xmlns:"):
                    continue
                _, a_name = _resolve(a, scope, attribute=True)
                if a_name == (RDF, "about"):
                    desc.about = data[data.index(b"=", a_start) + 1:a_end].strip()[1:-1]
                elif is_managed(a_name):
                    pre = a.rpartition(":")[0]
                    desc.props.append(_Prop(a_name, _lead(data, a_start), a_start, a_end, True, {pre: scope[pre]}))
                else:
                    desc.others = True
            packet.descriptions.append(desc)
        elif parent.role == "description":
            desc = packet.descriptions[-1]
            if is_managed(name):
                role = "prop"
                prop = _Prop(name, _lead(data, at), at, -1, False, {})
                desc.props.append(prop)
            else:
                role = "foreign"
                desc.others = True
        else:
            role = "inside" if parent.role in ("prop", "inside") else "foreign"
        declares = {a[6:] for a in attributes[0::2] if a == "xmlns" or a.startswith("xmlns:")}
        if role == "inside" and parent is not None:
            prop = parent.prop
        if prop is not None:  # the bindings the property's text takes from around it
            inner = [declares, *(f.declares for f in stack if f.prop is prop)]
            for q in [qname, *attributes[0::2]]:
                if q == "xmlns" or q.startswith(("xmlns:", "xml:")) or (q is not qname and ":" not in q):
                    continue  # declarations, xml:lang and unprefixed attributes need no binding
                pre = q.rpartition(":")[0]
                if not any(pre in d for d in inner):
                    prop.needs[pre] = scope[pre]
        stack.append(_Frame(name, at, tag_end, empty, scope, role, declares, prop))

    def end(qname: str) -> None:
        frame = stack.pop()
        at = parser.CurrentByteIndex
        if frame.empty:
            stop = frame.tag_end
        else:
            if data[at:at + 2] != b"</":
                raise Unsure("no end tag where expat reported one")
            stop = data.index(b">", at) + 1
        if frame.role == "prop" and frame.prop is not None:
            frame.prop.end = stop
        elif frame.role == "description":
            packet.descriptions[-1].end = stop
        elif frame.role == "rdf":
            if frame.empty:
                raise Unsure("an empty rdf:RDF")
            packet.rdf_end = at

    parser.StartDoctypeDeclHandler = doctype
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise Unsure(f"not well-formed: {exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise Unsure(str(exc)) from None
    if packet.rdf_end < 0:
        raise Unsure("no rdf:RDF")
    return packet


def _newline(data: bytes) -> bytes:
    """The original's line ending, for the lines this module adds."""
    i = data.find(b"\n")
    return b"\r\n" if i > 0 and data[i - 1:i] == b"\r" else b"\n"


def _attr(value: str) -> bytes:
    """``value`` as a double-quoted XML attribute value."""
    escaped = value.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
    return f'"{escaped}"'.encode()


def xmp_others_kept(original: bytes, rewritten: bytes, managed: Collection[tuple[str, str]]) -> bytes:
    """``original`` with the ``managed`` properties (namespace URI, local name; local name ``"*"``: the
    whole namespace) as ``rewritten`` has them, and every other byte as it was; ``rewritten`` itself when
    the original cannot be spliced safely (see the module docstring)."""
    try:
        return _splice(original, rewritten, managed)
    except Unsure:
        return rewritten


def _splice(original: bytes, rewritten: bytes, names: Collection[Name]) -> bytes:
    old = _parse(original, names)
    new = _parse(rewritten, names)
    cuts: list[tuple[int, int]] = []
    for desc in old.descriptions:
        if desc.props and not desc.others:
            cuts.append((desc.lead, desc.end))
        else:
            cuts.extend((p.lead, p.end) for p in desc.props)
    cuts.sort()
    if any(a[1] > b[0] for a, b in pairwise(cuts)):
        raise Unsure("overlapping spans")
    insert = _lead(original, old.rdf_end)
    if any(a < insert < b for a, b in cuts):
        raise Unsure("insertion point inside a cut")
    block = _description(original, rewritten, old, [p for d in new.descriptions for p in d.props])
    out = bytearray()
    pos = 0
    for a, b in [*[c for c in cuts if c[1] <= insert], (insert, insert), *[c for c in cuts if c[0] >= insert]]:
        out += original[pos:a]
        if (a, b) == (insert, insert):
            out += block
        pos = b
    out += original[pos:]
    return bytes(out)


def _description(original: bytes, rewritten: bytes, old: _Packet, props: list[_Prop]) -> bytes:
    """A new rdf:Description holding ``props`` (their text as in ``rewritten``), written in ``original``'s
    style: its rdf prefix, rdf:about, indentation and line ending; b"" when there is nothing to hold."""
    if not props:
        return b""
    needs: dict[str, str] = {}
    for p in props:
        for prefix, uri in p.needs.items():
            if needs.setdefault(prefix, uri) != uri:
                raise Unsure(f"prefix {prefix!r} bound to two namespaces")
    rdf = old.rdf_prefix
    if needs.get(rdf, RDF) != RDF:  # exiv2's properties use the original's rdf prefix for another namespace
        raise Unsure(f"prefix {rdf!r} clash")
    declare = {p: u for p, u in needs.items() if old.rdf_scope.get(p) != u}
    first = old.descriptions[0] if old.descriptions else None
    about = first.about if first is not None and first.about is not None else b""
    if b'"' in about:  # was single-quoted around a double quote: not worth re-escaping
        raise Unsure("a double quote in rdf:about")
    indent = first.indent if first is not None else b" "
    nl = _newline(original)
    head = nl + indent + f"<{rdf}:Description {rdf}:about=".encode() + b'"' + about + b'"'
    for prefix, uri in declare.items():
        head += nl + indent + b"  " + (f"xmlns:{prefix}=" if prefix else "xmlns=").encode() + _attr(uri)
    for p in props:
        if p.attribute:
            head += nl + indent + b" " + rewritten[p.start:p.end]
    elements = [p for p in props if not p.attribute]
    if not elements:
        return head + b"/>"
    body = b"".join(rewritten[p.lead:p.end] for p in elements)  # with exiv2's indentation before each
    return head + b">" + body + nl + indent + f"</{rdf}:Description>".encode()


def sidecar_others_kept(original: bytes, rewritten: bytes) -> bytes:
    """``xmp_others_kept`` with ramcli's own ``managed`` properties, checked by exiv2 itself: the managed
    properties read back as in ``rewritten`` and all others as in ``original``, else ``rewritten`` (the
    caller holds ``exiv.LOCK``: pyexiv2 keeps its errors in one global buffer)."""
    spliced = xmp_others_kept(original, rewritten, managed())
    if spliced == rewritten:
        return rewritten
    keys = managed_keys()

    def mine(key: str) -> bool:
        return any(key == k or key.startswith(k if k.endswith(".") else (k + "/", k + "[")) for k in keys)

    try:
        got, was, want = (_read_xmp(d) for d in (spliced, original, rewritten))
    except RuntimeError:
        return rewritten
    ours_ok = {k: v for k, v in got.items() if mine(k)} == {k: v for k, v in want.items() if mine(k)}
    theirs_ok = {k: v for k, v in got.items() if not mine(k)} == {k: v for k, v in was.items() if not mine(k)}
    return spliced if ours_ok and theirs_ok else rewritten


def _read_xmp(data: bytes) -> dict[str, object]:
    """exiv2's reading of an XMP packet (raises RuntimeError when it cannot)."""
    img = pyexiv2.ImageData(data)
    try:
        return img.read_xmp()
    finally:
        img.close()
