"""Keeping secrets out of everything a run writes or prints.

What is secret is declared, never guessed from a name:

- an option whose model declares it secret (``crispml.Secret``, or any pydantic secret type such
  as ``SecretStr``): its literal value is written as ``***``;
- a value read from ``${env:NAME}``, whatever the field: the reference is written, never the
  value (so a run can be resumed: resume reads the environment again);
- the password in any URL-shaped value (``postgresql://user:pw@host/db``): written as ``***``.

A :class:`Redactor` holds what one run knows to be secret (built while its recipe is resolved)
and is applied wherever options leave the run store: the manifest, trackers, the terminal, logs
and error messages. :func:`redact` is the same without a run's knowledge (declared secret
values and URL passwords only), for code that has no run context.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Secret, SecretBytes, SecretStr

MASK = "***"
SECRET_TYPES = (SecretStr, SecretBytes, Secret)

ENV_REFERENCE = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
_ONLY_REFERENCES = re.compile(r"(?:\$\{env:[A-Za-z_][A-Za-z0-9_]*\})+")
# scheme://user:password@ — the password runs to the authority's last '@' (RFC 3986).
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*):(?P<password>[^/?#\s]*)@")
# Ids and digests (run ids, fingerprints): never edited, so a short secret that happens to be a
# substring of a hash cannot corrupt what resume and the cache read back.
_ID = re.compile(r"[0-9A-Fa-f-]{16,}")

MIN_SUBSTRING = 4
"""Secrets at least this long are masked inside longer text too; shorter ones only where a value
is exactly the secret (masking every ``"eu"`` in every message would mangle the text)."""


def is_secret(value: Any) -> bool:
    """Whether ``value`` is a declared secret (an instance of a pydantic secret type)."""
    return isinstance(value, SECRET_TYPES)


def secret_text(value: Any) -> str:
    """The clear text of a declared secret value."""
    inner = value.get_secret_value()
    return inner.decode(errors="replace") if isinstance(inner, bytes) else str(inner)


def mask_urls(text: str) -> str:
    """``postgresql://user:pw@host/db`` → ``postgresql://user:***@host/db``, anywhere in ``text``.

    A password written as ``${env:NAME}`` is a reference, not a secret: it is kept.
    """

    def sub(match: re.Match[str]) -> str:
        password = match.group("password")
        if not password or _ONLY_REFERENCES.fullmatch(password):
            return match.group(0)
        return f"{match.group('head')}:{MASK}@"

    return _URL_PASSWORD.sub(sub, text) if "://" in text else text


def url_passwords(text: str) -> list[str]:
    """The passwords of the URLs in ``text`` (references excluded)."""
    return [
        m.group("password")
        for m in _URL_PASSWORD.finditer(text)
        if m.group("password") and not _ONLY_REFERENCES.fullmatch(m.group("password"))
    ]


def redact(value: Any) -> Any:
    """A copy of ``value`` (dicts, lists, models; nested) with declared secrets and URL passwords
    masked. Without a run's knowledge: inside a run, use ``context.redact`` (it also knows which
    values came from ``${env:NAME}``)."""
    return Redactor()(value)


def reveal(value: Any) -> tuple[Any, bool]:
    """``(a copy of value with each declared secret as its clear text, whether it held one)``.

    For what must depend on a secret without showing it — a stage's cache key, where the
    revealed copy goes only into a keyed digest. Nothing revealed may be written down."""
    if is_secret(value):
        return secret_text(value), True
    if isinstance(value, BaseModel):
        return reveal(value.model_dump())
    if isinstance(value, dict | list | tuple):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        pairs = [(k, reveal(v)) for k, v in items]
        found = any(held for _, (_, held) in pairs)
        if isinstance(value, dict):
            return {k: v for k, (v, _) in pairs}, found
        return [v for _, (v, _) in pairs], found
    return value, False


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"params": {"C": 1}}}`` → ``{"train.params.C": 1}`` (lists kept whole)."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    out[prefix.rstrip(".")] = value
    return out


def masked_fields(value: Any, prefix: str = "") -> list[str]:
    """The fields of a written-down recipe that lost their value to masking (dotted paths): such a
    recipe cannot be run again as is."""
    if isinstance(value, dict):
        return [f for k, v in value.items() for f in masked_fields(v, f"{prefix}{k}.")]
    if isinstance(value, list | tuple):
        return [f for i, v in enumerate(value) for f in masked_fields(v, f"{prefix}{i}.")]
    masked = isinstance(value, str) and (value == MASK or f":{MASK}@" in value)
    return [prefix.rstrip(".")] if masked else []


def has_masked(value: Any) -> bool:
    """Whether a written-down recipe lost a value to masking."""
    return bool(masked_fields(value))


# Manifest fields that hold no option values: written as they are (ids, times, paths, versions).
_MANIFEST_KEEP = frozenset(
    {
        "schema_version",
        "run_id",
        "recipe_name",
        "status",
        "started",
        "ended",
        "duration",
        "pid",
        "host",
        "recipe_file",
        "recipe_dir",
        "recipe_hash",
        "use_cache",
        "environment",
        "plugins",
        "resumes",
    }
)
_STAGE_KEEP = frozenset(
    {"name", "plugin", "status", "started", "ended", "duration", "fingerprint", "gates", "pid", "host"}
)


class Redactor:
    """What one run knows to be secret, and how to write each thing instead.

    Built by ``crispml.resolve`` while it expands ``${env:NAME}`` and validates options; held by
    the run context (``context.redact(value)``).
    """

    def __init__(self) -> None:
        self.replacements: dict[str, str] = {}
        """Secret text → what is written instead (``${env:NAME}`` or ``***``)."""
        self.secret_paths: set[tuple[str, ...]] = set()
        """Recipe fields (``("load", "password")``) whose options model declares them secret."""

    def __bool__(self) -> bool:
        return bool(self.replacements or self.secret_paths)

    # -- learning --------------------------------------------------------------------------

    def add(self, secret: str, replacement: str = MASK) -> None:
        """Know ``secret``; the first replacement given for a text wins (a reference, usually).

        Its escaped spellings are known too: an error message that shows the value through
        ``repr`` (a dict of options) or JSON writes ``a\\b`` for ``a\b``.
        """
        if not secret:
            return
        import json

        for spelling in (secret, repr(secret)[1:-1], json.dumps(secret)[1:-1]):
            if spelling not in self.replacements:
                self.replacements[spelling] = replacement

    def add_env(self, name: str, value: str) -> None:
        self.add(value, f"${{env:{name}}}")

    def add_path(self, path: Iterable[Any]) -> None:
        self.secret_paths.add(tuple(str(p) for p in path))

    def learn_options(self, options: BaseModel, raw: Any, prefix: tuple[str, ...]) -> None:
        """Record the declared-secret fields of validated ``options`` (read from ``raw``) and the
        passwords of URLs in its values."""
        _walk(self, options, raw, prefix)

    def merge(self, other: Redactor) -> None:
        for secret, replacement in other.replacements.items():
            self.add(secret, replacement)
        self.secret_paths |= other.secret_paths

    # -- applying --------------------------------------------------------------------------

    def text(self, text: str) -> str:
        """``text`` with every known secret replaced, and URL passwords masked."""
        if text in self.replacements:
            return self.replacements[text]
        if not _ID.fullmatch(text):
            for secret in sorted(self.replacements, key=len, reverse=True):
                if len(secret) >= MIN_SUBSTRING and secret in text:
                    text = text.replace(secret, self.replacements[secret])
        return mask_urls(text)

    def __call__(self, value: Any) -> Any:
        """A copy of ``value`` (dicts, lists, models, text) with what is secret masked."""
        if is_secret(value):
            return self.replacements.get(secret_text(value), MASK)
        if isinstance(value, BaseModel):
            return self(value.model_dump())
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def recipe(self, data: dict[str, Any]) -> dict[str, Any]:
        """A recipe's dict as it may be written down: declared-secret fields ``***`` unless they
        hold a ``${env:NAME}`` reference, references kept, URL passwords masked."""
        data = copy.deepcopy(data)
        for path in sorted(self.secret_paths):
            # Follow the path as far as the recipe spells it; where a validator reshaped the
            # value (so the path stops early), the whole option it stopped in is masked.
            parent: Any = None
            key: Any = None
            node: Any = data
            for part in path:
                child = _child(node, part)
                if child is _MISSING:
                    break
                parent, key, node = node, (int(part) if isinstance(node, list) else part), child
            if parent is None or (parent is data):
                continue  # not in the recipe (a default) or a whole stage: nothing to mask
            if not (isinstance(node, str) and ENV_REFERENCE.search(node)) and node is not None:
                parent[key] = MASK
        # By path only, never by value: a literal that happens to equal an ${env:NAME} value
        # must not turn into the reference (resume would read it from the environment).
        return _urls_only(data)  # type: ignore[no-any-return]

    def overrides(self, overrides: list[str], recipe: dict[str, Any]) -> list[str]:
        """``--set`` strings as they may be written down. One that sets a declared-secret field
        (or a mapping holding one) is rewritten from the masked ``recipe``."""
        masked = self.recipe(recipe)
        out = []
        for item in overrides:
            key, sep, raw = item.partition("=")
            parts = tuple(p for p in key.strip().split("."))
            touches = any(p[: len(parts)] == parts or parts[: len(p)] == p for p in self.secret_paths)
            if sep and touches and not _ONLY_REFERENCES.fullmatch(raw.strip()):
                node: Any = masked
                for part in parts:
                    child = _child(node, part)
                    node = MASK if child is _MISSING else child
                raw = node if isinstance(node, str) else _compact(node)
                item = f"{key}={raw}"
            out.append(mask_urls(item))
        return out

    def manifest(self, manifest: Any) -> Any:
        """A run manifest as it may be written: every field that can hold option values (the
        recipe, overrides, data, errors, stage summaries and records) redacted.

        Takes the manifest's dict, or a typed manifest (``to_dict()`` / ``load()``), and gives
        back the same kind.
        """
        if not isinstance(manifest, dict) and hasattr(manifest, "to_dict"):
            return type(manifest).load(self.manifest(manifest.to_dict()))
        out = {k: (v if k in _MANIFEST_KEEP else self(v)) for k, v in manifest.items() if k != "stages"}
        # The recipe and overrides were masked by path when the manifest was made; links are
        # identifiers resume reads back (a run id, a store's URI): URL passwords only.
        for key in ("recipe", "overrides", "links"):
            if key in manifest:
                out[key] = _urls_only(manifest[key])
        if "stages" in manifest:
            out["stages"] = [self._record(record) for record in manifest["stages"]]
        return {k: out[k] for k in manifest}

    def _record(self, record: dict[str, Any]) -> dict[str, Any]:
        """A stage's record (and each of its attempts): times, names and fingerprints kept."""
        out = {k: (v if k in _STAGE_KEEP else self(v)) for k, v in record.items() if k != "attempts"}
        if "attempts" in record:
            out["attempts"] = [self._record(a) if isinstance(a, dict) else self(a) for a in record["attempts"]]
        return {k: out[k] for k in record}

    def logger(self, logger: logging.Logger) -> logging.LoggerAdapter[logging.Logger]:
        """``logger`` whose messages are redacted before any handler sees them."""
        return _RedactingLogger(logger, self)


_MISSING = object()


def _child(node: Any, part: str) -> Any:
    """``node[part]`` in a recipe's dicts and lists, else ``_MISSING``."""
    if isinstance(node, dict):
        return node.get(part, _MISSING)
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    return _MISSING


def _urls_only(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _urls_only(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_urls_only(v) for v in value]
    return mask_urls(value) if isinstance(value, str) else value


def _compact(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), default=str)


def _walk(redactor: Redactor, value: Any, raw: Any, path: tuple[str, ...]) -> None:
    if is_secret(value):
        redactor.add_path(path)
        if not (isinstance(raw, str) and ENV_REFERENCE.search(raw)):
            redactor.add(secret_text(value))
        return
    if isinstance(value, BaseModel):
        raw_map = raw if isinstance(raw, dict) else {}
        for name, info in type(value).model_fields.items():
            key = info.alias if info.alias and info.alias in raw_map else name
            _walk(redactor, getattr(value, name), raw_map.get(key), (*path, key))
        return
    if isinstance(value, dict):
        raw_map = raw if isinstance(raw, dict) else {}
        for k, v in value.items():
            _walk(redactor, v, raw_map.get(k), (*path, str(k)))
        return
    if isinstance(value, list | tuple | set | frozenset):
        raw_list = raw if isinstance(raw, list) else []
        for i, v in enumerate(value):
            _walk(redactor, v, raw_list[i] if i < len(raw_list) else None, (*path, str(i)))
        return
    if isinstance(value, str | bytes):
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        for password in url_passwords(text):
            redactor.add(password)


def annotation_is_secret(annotation: Any) -> bool:
    """Whether a type annotation holds a secret type anywhere (``SecretStr | None``,
    ``dict[str, Secret]``, ``Annotated[SecretStr, ...]``)."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, SECRET_TYPES):
        return True
    origin = typing.get_origin(annotation)
    if isinstance(origin, type) and issubclass(origin, SECRET_TYPES):
        return True
    return any(annotation_is_secret(arg) for arg in typing.get_args(annotation) if arg is not annotation)


class _RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger adapter that formats each message and masks secrets in it before logging."""

    def __init__(self, logger: logging.Logger, redactor: Redactor) -> None:
        super().__init__(logger, {})
        self.redactor = redactor

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = " ".join(str(a) for a in (msg, *args))
        kwargs.setdefault("stacklevel", 2)
        self.logger.log(level, self.redactor.text(text), **kwargs)
