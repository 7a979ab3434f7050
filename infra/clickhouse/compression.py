"""HTTP body compression as ClickHouse's HTTP interface speaks it, through the well-kept codec libraries.

Requests: the body is decoded by its ``Content-Encoding`` (clickhouse-connect sends
``lz4`` frames by default, one frame per block; ``zstd`` frames and gzip members may
be concatenated the same way; a brotli body is one stream). Responses are compressed only when
the client asked twice, as ClickHouse requires: ``enable_http_compression=1`` and an
``Accept-Encoding`` naming a method we speak; the client's first listed method wins.

ClickHouse's own compressed framing (``compress=1`` / ``decompress=1``: CityHash128
checksummed blocks) is not HTTP compression; the server refuses those parameters
instead of ignoring them (see ``infra.clickhouse.server``).
"""

from __future__ import annotations

import gzip
import zlib

import brotli
import lz4.frame
from backports import zstd

from infra.clickhouse.errors import ClickHouseError


def _lz4_decompress(data: bytes) -> bytes:
    out = []
    while data:
        dec = lz4.frame.LZ4FrameDecompressor()
        out.append(dec.decompress(data))
        if not dec.eof:
            raise ValueError("truncated lz4 frame")
        data = dec.unused_data
    return b"".join(out)


def _gzip_compress(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=3, mtime=0)


_DECODERS = {
    "gzip": gzip.decompress, "x-gzip": gzip.decompress, "deflate": zlib.decompress,
    "lz4": _lz4_decompress, "zstd": zstd.decompress, "br": brotli.decompress,
}
_ENCODERS = {
    "lz4": lz4.frame.compress, "zstd": zstd.compress, "br": lambda d: brotli.compress(d, quality=4),
    "gzip": _gzip_compress, "deflate": lambda d: zlib.compress(d, 3),
}
METHODS = tuple(_ENCODERS)


def decode_body(body: bytes, content_encoding: str | None) -> bytes:
    """The request body without its ``Content-Encoding`` (identity when unset)."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity", "none"):
        return body
    decoder = _DECODERS.get(encoding)
    if decoder is None:
        raise ClickHouseError(f"Code: 89. DB::Exception: Unknown compression method '{encoding}' in Content-Encoding "
                              f"(supported: {', '.join(METHODS)}). (UNKNOWN_COMPRESSION_METHOD)",
                              89, "UNKNOWN_COMPRESSION_METHOD")
    try:
        return decoder(body) if body else body
    except Exception as exc:
        raise ClickHouseError(f"Code: 271. DB::Exception: Cannot decompress the {encoding} request body: "
                              f"{type(exc).__name__}: {exc}. (CANNOT_DECOMPRESS)", 271, "CANNOT_DECOMPRESS") from exc


def response_method(enable_http_compression: str | None, accept_encoding: str | None) -> str | None:
    """The method to compress a response with, or None (ClickHouse compresses only when both are given)."""
    if (enable_http_compression or "0").strip().lower() not in ("1", "true"):
        return None
    for item in (accept_encoding or "").split(","):
        name, _, params = item.strip().lower().partition(";")
        if name in _ENCODERS and params.replace(" ", "") not in ("q=0", "q=0.0"):
            return name
    return None


def encode_body(body: bytes, method: str) -> bytes:
    return _ENCODERS[method](body)
