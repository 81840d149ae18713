"""A per-worker read cache that is never stale, and the ETag of every read it serves.

Each entry is a rendered response (body bytes and headers) stored under the change
markers of the contents it shows (store/versions.py: a random value the database sets in
the transaction of every write to a content's comments). Every request reads the current
markers first, so an entry is served only while its contents are unchanged; no TTL.

Races: a page is built from rows read *after* the markers; the markers are read again
afterwards and the page is kept only if they did not move. Equal markers
before and after mean no write to those contents committed in between (a marker never
takes an old value again), so the rows are exactly the state the markers name. If they
moved, the page is rebuilt once under the new markers; if they move again it is served
fresh but not cached. docs/caching.md has the whole design.

An ETag is a hash of the bytes served, not of the markers: a marker moves with every write,
a pending comment's and a hidden one's included, so a tag made from it changed on writes no
reader may see, and watching one list's (or a hundred contents' counts') ETag told when
someone posted a comment held for moderation there. For the same reason every answer is
tagged, the ones not kept too: a page served untagged because writes landed while it was
built told a reader polling it that writes (held comments included) were landing there.
A tag names bytes, so it never needs the markers to hold: a later 304 is answered only
when the page built then has the same bytes.

Plain Python, no Flask: the views render, the service owns the cache, this module keeps it.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from ..store.versions import ChangeMarkers, Marker

# Builds that find the markers moved under them before a page is served uncached.
BUILD_ATTEMPTS = 2


@dataclass(frozen=True)
class Rendered:
    """A response the view built: the body exactly as sent, and its extra headers.

    ``keep`` False: the answer depends on more than the markers of its contents, so it is
    built for every request and never cached (still tagged: its tag names its bytes, and a
    304 is answered only once the request's own build has the same ones)."""

    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    keep: bool = True


@dataclass(frozen=True)
class Read:
    """What a cached read answers: ``not_modified`` (the client's ETag is current), or
    ``value`` (None: nothing to show, e.g. an unknown content). ``etag``, the hash of the
    value's bytes, is None only when there is nothing to show."""

    etag: str | None
    value: Rendered | None
    not_modified: bool = False


class _Entry:
    __slots__ = ("etag", "generation", "marker", "size", "value")

    def __init__(
        self,
        marker: tuple[Marker, ...],
        value: Rendered | None,
        etag: str | None,
        generation: Hashable | None,
    ) -> None:
        self.marker = marker
        self.value = value
        self.etag = etag
        self.generation = generation  # SQLite: the data_version it was last confirmed at
        self.size = len(value.body) if value is not None else 0


class ReadCache:
    """LRU of rendered reads, bounded in entries and body bytes; thread-safe.

    ``fingerprint`` names everything besides the data that shapes a body (the code's
    version, the settings the views render with): it goes into every ETag, so a CDN
    revalidating across a deploy or a settings change never gets a 304 for an old shape.
    """

    def __init__(
        self,
        markers: ChangeMarkers,
        *,
        max_entries: int,
        max_bytes: int,
        fingerprint: str,
    ) -> None:
        self.markers = markers
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._fingerprint = fingerprint
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        # Plain counters for tests and benchmarks; not exported as metrics.
        self.hits = 0
        self.misses = 0

    def read(
        self,
        key: tuple[Hashable, ...],
        content_ids: Sequence[str],
        build: Callable[[], Rendered | None],
        not_modified: Callable[[str], bool],
    ) -> Read:
        """Answer ``key`` (route + normalised query) whose body shows ``content_ids``."""
        generation = self.markers.generation()
        entry = self._get(key)
        if entry is not None and generation is not None and entry.generation == generation:
            marker = entry.marker  # nothing committed anywhere since it was confirmed
        else:
            marker = self.markers.versions(content_ids)
            if entry is not None and entry.marker == marker:
                entry.generation = generation
        if entry is not None and entry.marker == marker:
            self.hits += 1
            return _answer(entry.etag, entry.value, not_modified)
        # Not held under these markers: built, then tagged by its bytes, before a 304 can be
        # told from a 200 (a write no reader sees leaves the bytes and so the tag as they were).
        self.misses += 1
        for _attempt in range(BUILD_ATTEMPTS):
            value = build()
            if value is not None and not value.keep:
                return _answer(self.etag(key, value), value, not_modified)
            generation = self.markers.generation()
            after = self.markers.versions(content_ids)
            if after == marker:
                etag = self.etag(key, value)
                self._put(key, _Entry(marker, value, etag, generation))
                return _answer(etag, value, not_modified)
            marker = after  # written meanwhile: build again under the new markers
        # Kept changing: served as built, not cached, and tagged like any other answer (an
        # answer without a tag here told a reader polling it that writes, held comments'
        # included, were landing on this content).
        return _answer(self.etag(key, value), value, not_modified)

    def etag(self, key: tuple[Hashable, ...], value: Rendered | None) -> str | None:
        """A strong ETag: a hash of exactly what is sent (body and headers), of the route
        and query, and of the fingerprint; the same from every worker and instance for the
        same bytes. None for "nothing to show" (a 404 has no tag)."""
        if value is None:
            return None
        digest = hashlib.blake2b(
            repr((self._fingerprint, key, value.headers)).encode(), digest_size=12
        )
        digest.update(value.body)
        return f'"{digest.hexdigest()}"'

    def __len__(self) -> int:
        return len(self._entries)

    def _get(self, key: Hashable) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def _put(self, key: Hashable, entry: _Entry) -> None:
        if self.max_entries <= 0 or entry.size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            self._entries[key] = entry
            self._bytes += entry.size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.size


def _answer(etag: str | None, value: Rendered | None, not_modified: Callable[[str], bool]) -> Read:
    """304 when the client already holds these bytes (``not_modified``), else them."""
    if etag is not None and not_modified(etag):
        return Read(etag, None, not_modified=True)
    return Read(etag, value)
