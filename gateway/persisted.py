"""Persisted operations: the documents first-party apps ship with, kept in the repository.

Each ``.graphql`` file of the folder is one document; its id is the SHA-256 of its text (hex),
which clients send as ``extensions.persistedQuery.sha256Hash`` (the Apollo and Hive
convention), with or without the text. A channel set ``persisted_only`` runs nothing else, so a
stolen app key cannot run a hand-written document; other channels (partners) may send any
document, under their cost budget. There is no registration at run time: the manifest is
what the repository holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

PERSISTED_QUERY_NOT_FOUND: Final = "PERSISTED_QUERY_NOT_FOUND"
PERSISTED_QUERY_REQUIRED: Final = "PERSISTED_QUERY_REQUIRED"
PERSISTED_QUERY_MISMATCH: Final = "PERSISTED_QUERY_MISMATCH"
PERSISTED_REFUSALS: Final = frozenset(
    {PERSISTED_QUERY_NOT_FOUND, PERSISTED_QUERY_REQUIRED, PERSISTED_QUERY_MISMATCH}
)


class PersistedRefusal(Exception):
    """A request the manifest does not allow; ``code`` is its ``extensions.code``."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def operation_id(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class PersistedOperations:
    """The manifest: documents by id."""

    documents: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_folder(cls, folder: Path | None) -> PersistedOperations:
        """Every ``*.graphql`` file under ``folder`` (none without one). Raises OSError when
        the folder cannot be read: a manifest that is silently empty would refuse every
        operation of a ``persisted_only`` channel."""
        if folder is None:
            return cls()
        if not folder.is_dir():
            raise NotADirectoryError(f"security.persisted_operations: no folder {folder}")
        texts = [path.read_text() for path in sorted(folder.rglob("*.graphql"))]
        return cls({operation_id(text): text for text in texts})

    def resolve(
        self,
        query: str | None,
        extensions: Mapping[str, object] | None,
        persisted_only: bool,
    ) -> str | None:
        """The document to run for a request with ``query`` and ``extensions``; raises
        PersistedRefusal for an unknown id, an id that is not the text's, or (``persisted_only``)
        a document that is not in the manifest."""
        wanted = _requested_id(extensions)
        if wanted is None:
            if persisted_only and (query is None or operation_id(query) not in self.documents):
                raise PersistedRefusal(
                    "this channel runs only persisted operations", PERSISTED_QUERY_REQUIRED
                )
            return query
        document = self.documents.get(wanted)
        if document is None:
            raise PersistedRefusal("PersistedQueryNotFound", PERSISTED_QUERY_NOT_FOUND)
        if query is not None and query != document:
            raise PersistedRefusal(
                "the document is not the one of this id", PERSISTED_QUERY_MISMATCH
            )
        return document


def _requested_id(extensions: Mapping[str, object] | None) -> str | None:
    persisted = (extensions or {}).get("persistedQuery")
    if not isinstance(persisted, Mapping):
        return None
    wanted = persisted.get("sha256Hash")
    return wanted.lower() if isinstance(wanted, str) else None
