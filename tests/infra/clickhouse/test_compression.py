"""HTTP body codecs of the embedded server, against the codec libraries clickhouse-connect itself uses."""

from __future__ import annotations

import gzip
import zlib

import pytest
from clickhouse_connect.driver.compression import get_compressor

from infra.clickhouse import ClickHouseError
from infra.clickhouse.compression import decode_body, encode_body, response_method

DATA = b"".join(b"%d\tvalue-%d\n" % (i, i) for i in range(5000))


@pytest.mark.parametrize("method", ["lz4", "zstd", "br", "gzip"])
def test_decodes_clickhouse_connect_insert_bodies_block_by_block(method):
    comp = get_compressor(method)
    step = len(DATA) if method == "br" else 20000   # brotli streams cannot be split once concatenated
    body = b"".join(comp.compress_block(DATA[i:i + step]) for i in range(0, len(DATA), step)) + (comp.flush() or b"")
    assert decode_body(body, method) == DATA


def test_decodes_deflate_and_identity_and_refuses_unknown_or_corrupt():
    assert decode_body(zlib.compress(DATA), "deflate") == DATA
    assert decode_body(DATA, None) == decode_body(DATA, "identity") == DATA
    with pytest.raises(ClickHouseError) as unknown:
        decode_body(DATA, "snappy")
    assert unknown.value.code == 89
    with pytest.raises(ClickHouseError) as corrupt:
        decode_body(b"\x04\x22\x4d\x18garbage", "lz4")
    assert corrupt.value.code == 271


def test_responses_compress_only_when_enabled_and_accepted_in_client_order():
    assert response_method(None, "gzip") is None
    assert response_method("0", "gzip") is None
    assert response_method("1", "") is None
    assert response_method("1", "lz4,zstd,br,gzip,deflate") == "lz4"     # clickhouse-connect's default header
    assert response_method("1", "identity, gzip;q=0, deflate") == "deflate"
    assert gzip.decompress(encode_body(DATA, "gzip")) == DATA
