"""Names that end up as paths on someone's disk: model files, dataset files, artifacts.

One rule, checked where a name enters (the server, before anything is stored) and again
where it leaves (the SDK, before anything is written): a name is a *relative path inside
a folder* that means the same thing on every operating system and to every tool that
might normalise it. Anything that could mean something else is refused, never repaired:
a repaired name is a second name for the same thing.

Refused: empty; absolute (``/x``) or drive-qualified (``C:x``); backslashes; NUL and
control or format characters; empty, ``.``, ``..`` or dots-and-spaces-only segments;
lone surrogates and U+FFFD (what invalid UTF-8 decodes to); characters that Unicode
compatibility normalisation (NFKC) turns into something else, such as the fullwidth
solidus U+FF0F (``/``) or the one-dot leader U+2024 (``.``); over 1024 characters, or
a segment over 255 bytes of UTF-8.
"""

from __future__ import annotations

import re
import unicodedata

from ghaf.core.errors import InvalidInput

MAX_PATH = 1024
MAX_SEGMENT = 255  # bytes of UTF-8: the usual limit of a file name on disk
_DRIVE = re.compile(r"[A-Za-z]:")
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def relative_path(path: str, *, field: str = "path") -> str:
    """``path`` (NFC-normalised) if it is a safe relative ``a/b/c``, else ``InvalidInput``
    naming ``field``. See the module's docstring for what is refused."""
    if not isinstance(path, str) or not path:
        raise InvalidInput(f"{field} must not be empty", field=field)
    # Most paths are printable ASCII, which normalisation and the category scan can
    # neither change nor refuse: skipping them matters for manifests of 100,000 files.
    simple = path.isascii() and path.isprintable()
    if not simple:
        path = _checked_unicode(path, field)
    if len(path) > MAX_PATH:
        raise InvalidInput(
            f"{field} is {len(path)} characters long; the limit is {MAX_PATH}", field=field
        )
    if "\x00" in path:
        raise InvalidInput(f"{field} must not contain a NUL byte", field=field)
    if "\\" in path:
        raise InvalidInput(f"{field} must not contain backslashes; use '/'", field=field)
    if not simple and any(unicodedata.category(ch) in _REFUSED_CATEGORIES for ch in path):
        raise InvalidInput(f"{field} must not contain control characters", field=field)
    if path.startswith("/"):
        raise InvalidInput(f"{field} must be relative, not start with '/'", field=field)
    if _DRIVE.match(path):
        raise InvalidInput(
            f"{field} must be relative, not start with a drive letter ({path[:2]!r})",
            field=field,
        )
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidInput(f"{field} {path!r} has an empty, '.' or '..' segment", field=field)
        if not segment.strip(". "):
            # Windows drops trailing dots and spaces: '. .' or '...' would mean '.'/'..'.
            raise InvalidInput(
                f"{field} {path!r} has a segment of only dots and spaces", field=field
            )
        if len(segment) > MAX_SEGMENT or (
            not simple and len(segment.encode("utf-8")) > MAX_SEGMENT
        ):
            raise InvalidInput(
                f"{field} has a segment over {MAX_SEGMENT} characters (bytes of UTF-8)",
                field=field,
            )
    return path


def file_name(name: str, *, field: str = "filename") -> str:
    """A single segment of :func:`relative_path`: a file name with no folder in it."""
    if isinstance(name, str) and "/" in name:
        raise InvalidInput(
            f"{field} {name!r} must be a file name, not a path (no '/')", field=field
        )
    return relative_path(name, field=field)


def _checked_unicode(path: str, field: str) -> str:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(
            f"{field} is not valid Unicode (it holds a lone surrogate)", field=field
        ) from None
    if "\ufffd" in path:
        raise InvalidInput(
            f"{field} holds U+FFFD, the replacement character: it was decoded from invalid "
            "UTF-8 somewhere; send the name as valid UTF-8",
            field=field,
        )
    if len(path) > 4 * MAX_PATH:  # bound the normalisation work; refused below anyway
        return path
    nfc = unicodedata.normalize("NFC", path)
    if unicodedata.normalize("NFKC", nfc) != nfc:
        odd = next((ch for ch in nfc if unicodedata.normalize("NFKC", ch) != ch), nfc[0])
        raise InvalidInput(
            f"{field} holds {odd!r} (U+{ord(odd):04X}), which Unicode compatibility "
            f"normalisation turns into {unicodedata.normalize('NFKC', odd)!r}: a lookalike "
            "that tools could read as another name; use the plain character",
            field=field,
        )
    return nfc
