"""Hypothesis strategies shared by the fuzz tests of issue #8: hostile names, what "inert" means, and
valid values of any Avro schema (so every event of the catalogue can be generated and then damaged).

The predicates below are written without regular expressions on purpose: a validator's allow-list is a
regex, and a property that restated it would inherit its mistakes (``$`` also matches before a trailing
newline, which is exactly the hole these properties found).
"""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

# Pieces of real attacks: traversal, absolute paths, Windows paths, NUL/newlines, shell and SQL metacharacters,
# ClickHouse placeholder syntax, URL-encoding, look-alike and bidi unicode.
ATTACKS = (
    "..", "../", "../../etc/passwd", "/etc/passwd", "/", "\\", "..\\..\\windows", "C:\\x", "a/../b", "./", ".",
    ".git", "~root", "\x00", "\n", "\r\n", "\t", " ", "'", '"', "`", ";", "--", "/*", "*/", "$(id)", "`id`",
    "'; DROP TABLE datasets; --", "` ; DROP DATABASE modelbus; --", "\\'", "{x:String}", "%2e%2e%2f", "..%2f",
    "\u202e", "\u2215", "\uff0e\uff0e", "\u00e9", "\ufb01", "-rf", "--help", "|", "&&", "*", "?", "#", "%", "@",
    "s3://other-bucket/x", "file:///etc/passwd", "\x7f", "\u0085",
)
# Single characters that turn a valid name into a dangerous one when put at either end.
EDGES = ("\n", "\r", "\x00", "/", "\\", " ", ".", "..", "'", "`", ";", "\t", "\u2028", "\x85")
SAFE_SEGMENT_CHARS = frozenset(string.ascii_letters + string.digits + "._=@+-")


def hostile_names(max_size: int = 80) -> st.SearchStrategy[str]:
    """Names mixing attack fragments with plausible names, plus arbitrary unicode text.

    The fragment is often a suffix or prefix of an otherwise valid name ('churn\\n', '../churn'): that is
    where an allow-list with a sloppy anchor lets it through.
    """
    plain = plain_names(12)
    attack = st.sampled_from(ATTACKS)
    edge = st.sampled_from(EDGES)
    return st.one_of(
        attack,
        st.tuples(plain, edge).map("".join),
        st.tuples(edge, plain).map("".join),
        st.tuples(plain, attack, plain).map("".join),
        st.lists(st.one_of(attack, plain), min_size=1, max_size=6).map("".join),
        st.text(max_size=max_size),
    ).map(lambda s: s[:max_size])


def plain_names(max_size: int = 40) -> st.SearchStrategy[str]:
    """Names every validator must accept: lower-case letters and digits, then [a-z0-9_-]."""
    return st.builds(lambda head, tail: head + tail,
                     st.sampled_from(string.ascii_lowercase + string.digits),
                     st.text(alphabet=string.ascii_lowercase + string.digits + "_-", max_size=max_size - 1))


def is_inert_segment(name: object) -> bool:
    """Safe as one path segment, S3 key segment, directory name or Triton model name."""
    return (isinstance(name, str) and 0 < len(name) <= 200 and set(name) <= SAFE_SEGMENT_CHARS
            and name not in (".", "..") and name[0] not in ".-")


def is_inert_key(key: object) -> bool:
    """Relative, '/'-separated, every segment inert: cannot leave the store root or hide in a listing."""
    return isinstance(key, str) and all(is_inert_segment(seg) for seg in key.split("/"))


# timestamp-micros values a reader can turn into a datetime: 0001-01-01 .. 9999-12-31T23:59:59.999999Z.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_TIME_US = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
MAX_TIME_US = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)


def avro_values(schema: Any) -> st.SearchStrategy:
    """Values valid for an (expanded) Avro schema; unknown types fail loudly so new schemas stay covered."""
    if isinstance(schema, list):
        return st.one_of([avro_values(s) for s in schema])
    if isinstance(schema, str):
        schema = {"type": schema}
    t = schema["type"]
    if isinstance(t, (dict, list)):
        return avro_values(t)
    logical = schema.get("logicalType")
    if logical == "uuid":
        return st.uuids().map(str)
    if logical == "timestamp-micros":
        return st.integers(MIN_TIME_US, MAX_TIME_US)
    simple = {"null": st.none(), "boolean": st.booleans(), "int": st.integers(-2**31, 2**31 - 1),
              "long": st.integers(-2**63, 2**63 - 1), "float": st.floats(width=32), "double": st.floats(),
              "string": st.text(max_size=12), "bytes": st.binary(max_size=12)}
    if t in simple:
        return simple[t]
    if t == "array":
        return st.lists(avro_values(schema["items"]), max_size=3)
    if t == "map":
        return st.dictionaries(st.text(max_size=6), avro_values(schema["values"]), max_size=3)
    if t == "record":
        return st.fixed_dictionaries({f["name"]: avro_values(f["type"]) for f in schema["fields"]})
    if t == "enum":
        return st.sampled_from(schema["symbols"])
    raise NotImplementedError(f"no strategy for Avro type {t!r}: extend avro_values")
