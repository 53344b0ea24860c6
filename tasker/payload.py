"""A MsgQ class's payload as JSON, typed and checked by msgspec (https://jcristharif.com/msgspec/).

Each class gets one `Codec`: a msgspec Struct mirroring its dataclass fields
(same names, types and defaults; unknown fields refused), a JSON decoder and
an encoder. Decoding checks every element (`list[str]` holding 3 is refused
at `$.tags[1]`); datetimes are ISO 8601 text, Enums their values, nested
dataclasses JSON objects. Every problem is a `PayloadError` that names the
topic and the field path.

Input written before msgspec (Python's `json`, ASCII with `\\uXXXX` escapes,
possibly a lone surrogate escaped) still decodes: what msgspec's stricter
parser refuses is read again by `json` and converted by msgspec.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import re
import typing
from typing import Any

import msgspec

from tasker.exceptions import ConfigurationError, PayloadError

log = logging.getLogger(__name__)

_PROBLEM = re.compile(r"^(?P<msg>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)
_EXPECTED = re.compile(r"^Expected `(?P<want>.+)`, got `(?P<got>.+)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<name>.+)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>.+)`$")


class Codec:
    """Encode and decode one MsgQ class's payload; `ConfigurationError` if a field type
    is one msgspec cannot carry as JSON."""

    def __init__(self, cls: type[Any], topic: str, where: str) -> None:
        self.cls = cls
        self.topic = topic
        fields = [f for f in dataclasses.fields(cls) if f.init]
        hints = typing.get_type_hints(cls)
        spec = [(f.name, hints.get(f.name, Any), *_default(f)) for f in fields]
        self.struct = msgspec.defstruct(
            f"{cls.__name__}Payload", spec, kw_only=True, forbid_unknown_fields=True
        )
        try:
            msgspec.json.schema(self.struct)  # refuses types JSON cannot carry
        except (TypeError, ValueError) as exc:
            reason = str(exc).splitlines()[-1]
            raise ConfigurationError(
                f"{where}: a payload field type is not JSON: {reason}"
            ) from None
        self.decoder = msgspec.json.Decoder(self.struct)
        self.encoder = msgspec.json.Encoder()

    def decode(self, text: str | bytes) -> Any:
        """An instance from JSON text; `PayloadError` naming the field path."""
        try:
            return self._build(self.decoder.decode(text))
        except msgspec.ValidationError as exc:
            raise PayloadError(f"{self.topic}: {describe(exc)}") from None
        except RecursionError:
            raise PayloadError(f"{self.topic}: input nests too deep") from None
        except msgspec.DecodeError as exc:
            try:  # text from Python's json (a lone surrogate escaped, say)
                data = json.loads(text, parse_constant=_refuse_constant)
            except (TypeError, ValueError, RecursionError):
                raise PayloadError(f"{self.topic}: input is not valid JSON ({exc})") from None
        return self.from_dict(data)

    def from_dict(self, data: Any) -> Any:
        """An instance from decoded JSON values (dicts, lists, text, numbers)."""
        try:
            return self._build(msgspec.convert(data, self.struct))
        except msgspec.ValidationError as exc:
            raise PayloadError(f"{self.topic}: {describe(exc)}") from None
        except RecursionError:
            raise PayloadError(f"{self.topic}: input nests too deep") from None

    def encode(self, msg: Any) -> str:
        """The payload as compact JSON text, checked against the field types first."""
        try:
            out = self.encoder.encode(msg)
        except UnicodeEncodeError:  # a lone surrogate: escape it as Python's json does
            out = _encode_escaped(msg, self.topic)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise PayloadError(f"{self.topic}: input is not JSON-serialisable: {exc}") from None
        if b"null" in out:  # msgspec writes NaN and infinities as null
            _refuse_non_finite(msgspec.to_builtins(msg), "$", self.topic)
        try:  # the field types, checked at publish rather than in the consumer
            self.decoder.decode(out)
        except msgspec.ValidationError as exc:
            raise PayloadError(f"{self.topic}: {describe(exc)}") from None
        except msgspec.DecodeError:
            self.decode(out)
        return out.decode()

    def schema_text(self) -> str:
        """The payload's JSON Schema (draft 2020-12, as msgspec writes it) as
        compact JSON text with sorted keys: equal classes give equal text."""
        schema = msgspec.json.schema(self.struct)
        return json.dumps(schema, sort_keys=True, separators=(",", ":"))

    def _build(self, struct: Any) -> Any:
        return self.cls(**msgspec.structs.asdict(struct))


def describe(exc: msgspec.ValidationError) -> str:
    """msgspec's validation message in tasker's words, with the JSON path."""
    m = _PROBLEM.match(str(exc))
    assert m is not None  # the pattern matches any text
    msg, path = m["msg"], m["path"] or "$"
    if found := _EXPECTED.match(msg):
        what = "input" if path == "$" else f"field {path}"
        return f"{what} must be {_json_type(found['want'])}, got {_json_type(found['got'])}"
    if found := _MISSING.match(msg):
        return f"missing field {path}.{found['name']}"
    if found := _UNKNOWN.match(msg):
        return f"unknown field {path}.{found['name']}"
    return f"field {path}: {msg[:1].lower()}{msg[1:]}"


def _json_type(name: str) -> str:
    return "a JSON object" if name == "object" else name


def _default(f: dataclasses.Field[Any]) -> tuple[Any, ...]:
    if f.default is not dataclasses.MISSING:
        return (f.default,)
    if f.default_factory is not dataclasses.MISSING:
        return (msgspec.field(default_factory=f.default_factory),)
    return ()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _encode_escaped(msg: Any, topic: str) -> bytes:
    try:
        data = msgspec.to_builtins(msg)
        return json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"{topic}: input is not JSON-serialisable: {exc}") from None


def _refuse_non_finite(value: Any, path: str, topic: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise PayloadError(f"{topic}: field {path} must be a finite number, got {value}")
    if isinstance(value, dict):
        for key, item in value.items():
            _refuse_non_finite(item, f"{path}.{key}", topic)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _refuse_non_finite(item, f"{path}[{i}]", topic)


_MESSAGE_MAX = 300
"""Characters of a schema problem kept in an error (jsonschema repeats the value)."""


class SchemaChecks:
    """Checks JSON values against declared payload schemas (text, as an
    instance wrote it in `topic.payload_schema`), with the jsonschema package
    (https://python-jsonschema.readthedocs.io/). A compiled validator is kept
    per (topic, schema text), at most `size` of them, the least recently used
    dropped first. One per app: no state outside it."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._validators: collections.OrderedDict[tuple[str, str], Any] = (
            collections.OrderedDict()
        )

    def check(self, topic: str, schema_text: str, data: Any) -> None:
        """Refuse `data` (decoded JSON values) that the schema refuses:
        `PayloadError` "<topic>: <path>: <problem>", e.g.
        "image.tagged: $.tags[1]: 3 is not of type 'string'". A schema that
        is not valid JSON Schema (a row edited by hand) checks nothing and
        is logged once."""
        validator = self._validator(topic, schema_text)
        if validator is None:
            return
        try:  # the first problem only: a huge bad list is not walked to its end
            first = next(iter(validator.iter_errors(data)), None)
        except RecursionError:
            raise PayloadError(f"{topic}: input nests too deep") from None
        if first is not None:
            message = first.message
            if len(message) > _MESSAGE_MAX:
                message = message[:_MESSAGE_MAX] + "..."
            raise PayloadError(f"{topic}: {first.json_path}: {message}")

    def _validator(self, topic: str, schema_text: str) -> Any:
        key = (topic, schema_text)
        if key in self._validators:
            self._validators.move_to_end(key)
            return self._validators[key]
        validator = _compile(topic, schema_text)
        self._validators[key] = validator
        if len(self._validators) > self._size:
            self._validators.popitem(last=False)
        return validator


def _compile(topic: str, schema_text: str) -> Any:
    import jsonschema  # on first use: a process that never checks does not load it

    try:
        schema = json.loads(schema_text)
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
        return cls(schema)
    except (ValueError, TypeError, RecursionError, jsonschema.SchemaError) as exc:
        log.warning("topic %r: its declared payload schema is not valid JSON Schema (%s); "
                    "inputs are not checked against it", topic, str(exc)[:200])  # fmt: skip
        return None
