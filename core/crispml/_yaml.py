"""YAML loading that remembers where every key is, so errors can name the line — and that a
hostile or broken file cannot hang, crash or fool.

A recipe is small and hand-written, so anything far outside that is a mistake, refused before it
costs anything:

* a file over :data:`MAX_BYTES`, a binary file (a NUL byte) or one that is not UTF-8;
* nesting deeper than :data:`MAX_DEPTH` (libyaml's composer recurses in C: a deep enough
  ``[[[[…`` crashes the interpreter instead of raising, so depth is checked on the event stream
  first, which libyaml produces without recursion);
* aliases that expand to more than :data:`MAX_VALUES` values (a "billion laughs" document is a
  few hundred bytes; everything downstream — validation, copies, the manifest — would expand it);
* an alias that refers to itself;
* a key given twice in one mapping (PyYAML keeps the last silently: a user edits the first one
  and nothing changes).

Each is a :class:`YamlProblem` with the line it was found at.
"""

from __future__ import annotations

from typing import Any

import yaml

from crispml.errors import clip

Path_ = tuple[str | int, ...]

MAX_BYTES = 1_000_000
"""The largest recipe file read (a recipe is a page of YAML; data belongs in data files)."""
MAX_DEPTH = 64
"""The deepest nesting of mappings and sequences accepted."""
MAX_VALUES = 100_000
"""The most values a document may hold once its aliases are expanded."""

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE = "tag:yaml.org,2002:merge"


class YamlProblem(ValueError):
    """A YAML text crispml refuses to load; ``line`` is 1-based when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def decode(data: bytes) -> str:
    """The text of a recipe file's bytes: UTF-8 (a BOM allowed), no NUL byte, at most
    :data:`MAX_BYTES`. Raises :class:`YamlProblem` naming what is wrong (never the content)."""
    if len(data) > MAX_BYTES:
        raise YamlProblem(f"the file is {len(data):,} bytes; a recipe is at most {MAX_BYTES:,} bytes")
    nul = data.find(b"\0")
    if nul >= 0:
        raise YamlProblem("a binary file, not YAML text (it holds NUL bytes)", data.count(b"\n", 0, nul) + 1)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise YamlProblem(f"not UTF-8 text (byte 0x{data[exc.start]:02x} cannot be decoded)", line) from None


def load_with_lines(text: str) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML; return the data and a map from each key's path to its 1-based line.

    Raises ``yaml.YAMLError`` for malformed YAML and :class:`YamlProblem` for the refusals listed
    in the module's docstring."""
    if len(text) > MAX_BYTES:
        raise YamlProblem(f"the text is {len(text):,} characters; a recipe is at most {MAX_BYTES:,}")
    _check_depth(text)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        lines: dict[Path_, int] = {}
        if node is None:
            return None, lines
        _Checker().check(node)
        _walk(node, (), lines, set())
        return loader.construct_document(node), lines
    finally:
        loader.dispose()


def load_yaml(source: str | bytes) -> Any:
    """Parse a YAML document a user wrote (a recipe, a suite, a plugin's own file) with the
    refusals listed above: a :class:`YamlProblem` (its ``line`` set when known) for a hostile or
    broken file, ``yaml.YAMLError`` for malformed YAML. Bytes are decoded as UTF-8 first."""
    text = decode(source) if isinstance(source, bytes) else source
    return load_with_lines(text)[0]


def _check_depth(text: str) -> None:
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                raise YamlProblem(f"nested more than {MAX_DEPTH} levels deep", mark.line + 1 if mark else None)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


class _Checker:
    """Counts the values a node expands to (aliases included, each shared node once: linear
    time), and finds duplicate keys and self-referring aliases."""

    def __init__(self) -> None:
        self.sizes: dict[int, int] = {}
        self.open: set[int] = set()

    def check(self, node: yaml.Node) -> None:
        total = self.size(node)
        if total > MAX_VALUES:  # pragma: no cover - size() raises first
            raise YamlProblem(f"the document expands to more than {MAX_VALUES:,} values")

    def size(self, node: yaml.Node) -> int:
        key = id(node)
        if key in self.sizes:
            return self.sizes[key]
        if key in self.open:
            raise YamlProblem(
                "an alias refers to the collection that holds it (a recursive document)", node.start_mark.line + 1
            )
        self.open.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, Any], int] = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != _MERGE:
                    ident = (k.tag, k.value)
                    if ident in seen:
                        raise YamlProblem(
                            f"duplicate key '{clip(str(k.value), 60)}' (first given at line {seen[ident]})",
                            k.start_mark.line + 1,
                        )
                    seen[ident] = k.start_mark.line + 1
                total += self.size(k) + self.size(v)
                self._bound(total, node)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                total += self.size(item)
                self._bound(total, node)
        self.open.discard(key)
        self.sizes[key] = total
        return total

    @staticmethod
    def _bound(total: int, node: yaml.Node) -> None:
        if total > MAX_VALUES:
            raise YamlProblem(
                f"aliases expand this document to more than {MAX_VALUES:,} values (an alias bomb?)",
                node.start_mark.line + 1,
            )


def _walk(node: yaml.Node, path: Path_, lines: dict[Path_, int], seen: set[int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if id(node) in seen:  # reached again through an alias: its own lines are already known
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, str(key.value))
            lines[sub] = key.start_mark.line + 1
            _walk(value, sub, lines, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), lines, seen)


def line_of(lines: dict[Path_, int], path: Path_) -> int | None:
    """The line of ``path``, or of its nearest ancestor that has one."""
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None
