from __future__ import annotations

import struct
import zlib

import pytest

from evstate.backends.file.segment import (
    FRAME,
    HEADER_SIZE,
    decode_header,
    encode_header,
    frame_record,
    scan_segment,
    segment_name,
)


def test_segment_names_sort_by_first_revision() -> None:
    names = [segment_name(r) for r in (1, 9, 10, 100, 2**40)]
    assert names == sorted(names)
    assert segment_name(1) == "00000000000000000001.log"


def test_header_round_trip_and_size() -> None:
    header = encode_header(42)
    assert len(header) == HEADER_SIZE == 24
    assert decode_header(header) == 42


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda h: b"XXXX" + h[4:], "magic"),
        (lambda h: h[:10] + bytes([h[10] ^ 1]) + h[11:], "checksum"),
        (lambda h: h[:8], "header is 8 bytes"),
    ],
)
def test_bad_headers(mutate: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_header(mutate(encode_header(7)))  # type: ignore[operator]


def test_frame_layout() -> None:
    payload = b"\x88\x01hello"
    frame = frame_record(payload)
    length, crc = FRAME.unpack_from(frame, 0)
    assert length == len(payload)
    assert crc == zlib.crc32(payload, zlib.crc32(struct.pack("<I", length)))
    assert frame[8:] == payload


def _image(*payloads: bytes) -> bytes:
    return encode_header(1) + b"".join(frame_record(p) for p in payloads)


def test_scan_clean_segment() -> None:
    result = scan_segment(_image(b"\x88\x01a", b"\x88\x01bb"))
    assert [bytes(p) for _, p in result.records] == [b"\x88\x01a", b"\x88\x01bb"]
    assert result.bad_offset is None
    assert result.valid_end == len(_image(b"\x88\x01a", b"\x88\x01bb"))


def test_scan_reports_torn_tail_without_raising() -> None:
    data = _image(b"\x88\x01a", b"\x88\x01bb")[:-1]
    result = scan_segment(data)
    assert len(result.records) == 1
    assert result.bad_offset == result.valid_end
    assert not result.corrupt


def test_scan_reports_corruption_when_valid_data_follows() -> None:
    data = bytearray(_image(b"\x88\x01a", b"\x88\x01bb", b"\x88\x01ccc"))
    second = HEADER_SIZE + 8 + 3
    data[second + 9] ^= 0xFF
    result = scan_segment(bytes(data))
    assert result.bad_offset == second
    assert result.corrupt
    assert result.reason == "checksum mismatch"
