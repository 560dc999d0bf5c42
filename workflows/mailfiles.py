"""Messages from files, for `lanedesk ingest`: .eml files, directories of them, mbox and Maildir."""

from __future__ import annotations

import mailbox
from collections.abc import Iterator
from pathlib import Path


def count_messages(paths: list[Path]) -> int:
    """How many messages :func:`read_messages` will yield (for the progress bar)."""
    return sum(1 for _ in _sources(paths, count_only=True))


def read_messages(paths: list[Path]) -> Iterator[tuple[str, bytes]]:
    """(label, raw bytes) for every message under ``paths``, in a stable order."""
    for label, raw in _sources(paths, count_only=False):
        yield label, raw or b""


def _sources(paths: list[Path], *, count_only: bool) -> Iterator[tuple[str, bytes | None]]:
    for path in paths:
        if path.is_dir() and all((path / sub).is_dir() for sub in ("cur", "new", "tmp")):
            maildir = mailbox.Maildir(path, factory=None, create=False)
            try:
                for key in sorted(maildir.keys()):
                    yield f"{path}:{key}", None if count_only else maildir.get_bytes(key)
            finally:
                maildir.close()
        elif path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
                yield from _sources([child], count_only=count_only)
        elif _is_mbox(path):
            box = mailbox.mbox(path, factory=None, create=False)
            try:
                for key in box.iterkeys():  # iterating a Mailbox yields messages, not keys
                    yield f"{path}#{key}", None if count_only else box.get_bytes(key)
            finally:
                box.close()
        elif path.is_file():
            yield str(path), None if count_only else path.read_bytes()
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")


def _is_mbox(path: Path) -> bool:
    if not path.is_file():
        return False
    with path.open("rb") as handle:
        return handle.read(5) == b"From "
