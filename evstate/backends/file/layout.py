"""Every byte layout and file name of a file store, in one place: docs/format.md.

The writers and readers of :mod:`segment`, :mod:`snapshot`, :mod:`cursors`, :mod:`lock`
and :mod:`key_index` import their constants from here and restate none of them; each block
names the section of docs/format.md that describes it, and tests check the tables there
against these sizes (``tests/test_format_doc.py``, ``tests/unit/test_key_index_files.py``).
"""

from __future__ import annotations

import re
import struct
from typing import Final

__all__ = [
    "CHUNK_KEYS",
    "CURSOR_FILE_VERSION",
    "FOLLOWERS_DIR",
    "FRAME",
    "FRAME_SIZE",
    "HEAD_FILE",
    "HEAD_FILE_VERSION",
    "KEY_INDEX_ENTRY_BYTES",
    "KEY_INDEX_HEADER",
    "KEY_INDEX_MAGIC",
    "KEY_INDEX_NAME_RE",
    "KEY_INDEX_VERSION",
    "KEY_INDEX_TMP_SUFFIX",
    "LOCK_FILE",
    "MAX_RECORD_BYTES",
    "PAYLOAD_PREFIXES",
    "SEGMENT_HEADER",
    "SEGMENT_HEADER_SIZE",
    "SEGMENT_MAGIC",
    "SEGMENT_NAME_RE",
    "SEGMENT_VERSION",
    "SEGMENT_VERSIONS",
    "SNAPSHOT_HEADER",
    "SNAPSHOT_MAGIC",
    "SNAPSHOT_NAME_RE",
    "SNAPSHOT_VERSION",
    "TRAILER_TAG",
    "TRIGGERS_FILE",
    "key_index_name",
    "segment_name",
    "snapshot_name",
]

# ---- docs/format.md section 1: segment files ----------------------------------------------------
# version 2: magic 4s | version u16 | flags u16 | first_revision u64 | salt u32 |
#            header_crc u32 (over bytes 0..19)
# version 1: magic 4s | version u16 | flags u16 | first_revision u64 | header_crc u32 (over
#            bytes 0..15) | reserved u32; its records are unsalted (salt 0). Still read.
SEGMENT_MAGIC: Final = b"EVSG"
SEGMENT_VERSION: Final = 2
SEGMENT_VERSIONS: Final = (1, 2)
SEGMENT_HEADER: Final = struct.Struct("<4sHHQII")
SEGMENT_HEADER_SIZE: Final = SEGMENT_HEADER.size  # 24
SEGMENT_NAME_RE: Final = re.compile(r"^(\d{20})\.log$")

# ---- docs/format.md section 3: record framing ---------------------------------------------------
# length u32 | crc u32 | payload; crc = CRC-32 of (the 4 length bytes + payload), started
# from the segment's salt instead of 0 (snapshots and cursor files: salt 0)
FRAME: Final = struct.Struct("<II")
FRAME_SIZE: Final = FRAME.size  # 8
MAX_RECORD_BYTES: Final = 1 << 30
# Every record payload starts with CBOR "array of 8" (or 9: an event with attributes) then
# kind 1, or "array of 4" then kind 2 (docs/format.md section 2): the corruption check
# looks for these after a bad record.
PAYLOAD_PREFIXES: Final = (b"\x88\x01", b"\x89\x01", b"\x84\x02")

# ---- docs/format.md section 5: snapshot files ---------------------------------------------------
# magic 4s | version u16 | flags u16 | revision u64 | timestamp u64 | header_crc u32 |
# reserved u32; then framed chunks and a framed trailer
SNAPSHOT_MAGIC: Final = b"EVSS"
SNAPSHOT_VERSION: Final = 1
SNAPSHOT_HEADER: Final = struct.Struct("<4sHHQQII")  # 32 bytes
SNAPSHOT_NAME_RE: Final = re.compile(r"^(\d{20})\.snap$")
CHUNK_KEYS: Final = 4096  # keys per chunk: ~0.3 ms to encode, ~0.1 ms to decode
TRAILER_TAG: Final = "end"

# ---- docs/format.md section 7: trigger cursor files ---------------------------------------------
TRIGGERS_FILE: Final = "triggers.cbor"  # the owner's cursors and dead letters
FOLLOWERS_DIR: Final = "followers"  # followers' cursor files: <name>.cursor, <name>.lock
CURSOR_FILE_VERSION: Final = 1

# ---- docs/format.md sections 9 and 10: the writer's lock, the recorded head -----------
LOCK_FILE: Final = "LOCK"
HEAD_FILE: Final = "HEAD"  # the durable head at the last clean close (a framed CBOR map)
HEAD_FILE_VERSION: Final = 1

# ---- docs/format.md section 11: key index files -------------------------------------------
# magic 4s | version u16 | flags u16 | first_revision u64 | segment_header_crc u32 |
# records u32 | covered_size u64 | last_offset u64 | last_crc u32 | body_crc u32 |
# reserved u32 | header_crc u32 (over bytes 0..51); then the body:
# timestamps i64 x records | offsets u32 x records | keys u64 x records (ascending:
# key_hash << 32 | revision - first_revision)
KEY_INDEX_MAGIC: Final = b"EVKI"
KEY_INDEX_VERSION: Final = 1
KEY_INDEX_HEADER: Final = struct.Struct("<4sHHQIIQQIIII")  # 56 bytes
KEY_INDEX_NAME_RE: Final = re.compile(r"^(\d{20})\.keys$")
KEY_INDEX_TMP_SUFFIX: Final = ".tmp"  # written as <name>.keys.tmp, renamed into place
KEY_INDEX_ENTRY_BYTES: Final = 20  # per revision: timestamp i64, offset u32, key u64


def segment_name(first_revision: int) -> str:
    """File name of the segment whose first record has ``first_revision`` (sorts with ``ls``)."""
    return f"{first_revision:020d}.log"


def snapshot_name(revision: int) -> str:
    """File name of the snapshot of ``revision`` (sorts with ``ls``)."""
    return f"{revision:020d}.snap"


def key_index_name(first_revision: int) -> str:
    """File name of the key index of the segment whose first record has ``first_revision``."""
    return f"{first_revision:020d}.keys"
