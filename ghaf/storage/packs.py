"""The wire format that carries many small contents in one request or response.

A pack is a sequence of frames, each the content's SHA-256 (32 raw bytes), its size
(8 bytes, big-endian) and then its bytes. One HTTP exchange then moves thousands of
tiny files, instead of one request, one object and one commit per file.

A response can fail after its status line has gone out (a member that no longer
authenticates). The server then ends it with an error frame: an all-zero hash,
which no content has, followed by the problem document as JSON.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import NoReturn

from ghaf.core.errors import GhafError, InvalidInput, error_from_problem

MEDIA_TYPE = "application/x-ghaf-pack"
MEMBER_MAX = 16 << 20  # larger contents stream on their own (PUT blobs/{sha256})
MEMBERS_MAX = 50_000
_HEADER = struct.Struct(">32sQ")


ERROR_SHA256 = "0" * 64


def frame_header(sha256: str, size: int) -> bytes:
    return _HEADER.pack(bytes.fromhex(sha256), size)


def error_frame(error: GhafError) -> bytes:
    problem = json.dumps(error.to_problem()).encode()
    return frame_header(ERROR_SHA256, len(problem)) + problem


def raise_error_frame(content: bytes) -> NoReturn:
    problem = json.loads(content)
    raise error_from_problem(problem, status=int(problem.get("status", 500)))


class FrameReader:
    """Splits a pack arriving in arbitrary pieces back into ``(sha256, content)``."""

    def __init__(self, *, member_max: int = MEMBER_MAX, members_max: int = MEMBERS_MAX) -> None:
        self._buffer = bytearray()
        self._member_max = member_max
        self._members_max = members_max
        self.count = 0

    def feed(self, piece: bytes | bytearray) -> Iterator[tuple[str, bytes]]:
        self._buffer += piece
        at = 0
        with memoryview(self._buffer) as view:  # slices of a view copy once, not twice
            while len(view) - at >= _HEADER.size:
                digest, size = _HEADER.unpack_from(view, at)
                if size > self._member_max:
                    raise InvalidInput(
                        f"pack member {self.count} declares {size} bytes; members are at "
                        f"most {self._member_max} bytes: upload larger content with "
                        "PUT blobs/{sha256}",
                        field="body",
                    )
                end = at + _HEADER.size + size
                if len(view) < end:
                    break
                if self.count == self._members_max:
                    raise InvalidInput(
                        f"a pack holds at most {self._members_max} members; split the upload",
                        field="body",
                    )
                self.count += 1
                yield digest.hex(), bytes(view[at + _HEADER.size : end])
                at = end
        del self._buffer[:at]

    @property
    def empty(self) -> bool:
        """No partial frame is waiting for more bytes."""
        return not self._buffer

    def close(self) -> None:
        """The body ended: anything left over is a truncated frame."""
        if self._buffer:
            raise InvalidInput(
                f"the pack ends inside member {self.count} ({len(self._buffer)} stray bytes): "
                "truncated upload",
                field="body",
            )
