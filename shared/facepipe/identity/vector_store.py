"""Galleries and albums in LanceDB: an embedded vector engine whose tables are files in S3 (or a
folder), for what outgrows one function's memory (docs/vector-stores.md).

``FACEPIPE_GALLERY=lancedb+s3://<bucket>/<prefix>`` (or ``lancedb:<folder>``) keeps the gallery
as one LanceDB table beside its crops; ``FACEPIPE_ALBUMS`` of the same form keeps one table per
album. Layout under ``<prefix>``::

    gallery.lance/                 the gallery table: name, vector (unit, float32); the
                                   embedder in its schema metadata; an IVF index from
                                   index_min_size rows, built by the writer (never the function)
    gallery.manifest.json          the table version the readers serve, embedder, dimension,
                                   count, updated_at: written after each change, so a reader
                                   reloads (its ETag) and opens exactly that version
    crops/<name>/<sha256>.png      each enrolled face crop, as beside a one-object gallery
    album-<album>.lance/           an album: id, photo, box, vector, request_id, shard

Matching keeps :class:`~facepipe.identity.gallery.Gallery`'s semantics (the same widening
search and per-person aggregation, :func:`~facepipe.identity.gallery.widening_top_people`), with
exact similarities: below ``index_min_size`` rows the engine scans every row, above it the IVF
candidates are re-scored against the stored vectors (``refine_factor``). Erasure deletes the
rows, rewrites every data file that held them (compaction with no deletion threshold), removes
every older table version and, in a versioned bucket, every older object version under the table.

``lancedb`` and ``pylance`` (the ``vectors`` extra) are imported when a store is opened.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from facepipe.errors import GalleryError
from facepipe.identity.albums import AlbumEntry, AlbumHit, check_album_name
from facepipe.identity.gallery import (
    DEFAULT_TOP_K,
    INDEX_MIN_SIZE,
    Gallery,
    Match,
    PersonScore,
    match_people,
    widening_top_people,
)
from facepipe.identity.gallery_store import (
    CROPS_FOLDER,
    GalleryStatus,
    PersonCrops,
    Removal,
    read_manifest,
    write_manifest,
)
from facepipe.identity.objects import Objects

GALLERY_TABLE = "gallery"
ALBUM_TABLE_PREFIX = "album-"
MANIFEST_FILE = "gallery.manifest.json"
EMBEDDER_KEY = b"facepipe.embedder"
# Rows re-scored against the stored vectors per result row: 1 re-scores what the IVF codes
# chose, so every similarity returned is exact; on S3 each is a ranged GET (25 a top-5 query),
# so more costs requests (4: 100 a query) for recall the codes already give (bench vectors).
REFINE_FACTOR = 1
# The writer folds new rows into the index once this share of the table is unindexed.
REINDEX_SHARE = 0.1


def sql_text(value: str) -> str:
    """A SQL string literal (single quotes doubled).

    >>> sql_text("o'brien")
    "'o''brien'"
    """
    return "'" + value.replace("'", "''") + "'"


def _vectors(rows: np.ndarray) -> Any:
    import pyarrow as pa

    flat = np.ascontiguousarray(rows, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])


def _column_vectors(table: Any, column: str = "vector") -> np.ndarray:
    """An Arrow table's (or batch's) fixed-size-list column as an (n, D) float32 array."""
    col = table[column]
    if hasattr(col, "combine_chunks"):
        col = col.combine_chunks()
    dim = col.type.list_size
    return np.asarray(col.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, dim)


class LanceDatabase:
    """One LanceDB database: ``objects`` (an S3 bucket or a folder) under ``prefix``.

    Args:
        objects: the bucket or folder (its crops, its manifest, and the history dropped on
            erasure in a versioned bucket).
        prefix: the key prefix of the database ("" for the folder itself).
        storage_options: LanceDB's S3 options (``aws_endpoint``, ``allow_http``, region,
            credentials): :func:`facepipe.app.stores.lance_storage_options`.
    """

    def __init__(
        self, objects: Objects, prefix: str = "", storage_options: Mapping[str, str] | None = None
    ) -> None:
        self.objects = objects
        self.prefix = prefix.strip("/")
        self.uri = objects.uri(self.prefix)
        self.storage_options = dict(storage_options or {})
        self._db: Any = None
        self._tables: dict[str, Any] = {}

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    @property
    def location(self) -> str:
        return f"lancedb+{self.uri}" if self.uri.startswith("s3://") else f"lancedb:{self.uri}"

    def connect(self) -> Any:
        if self._db is None:
            import lancedb

            self._db = lancedb.connect(self.uri, storage_options=self.storage_options or None)
        return self._db

    def tables(self) -> list[str]:
        db = self.connect()
        names: list[str] = []
        token = None
        while True:
            page = db.list_tables(page_token=token)
            names += page.tables
            token = page.page_token
            if not token:
                return sorted(names)

    def open(self, name: str, *, reuse: bool = False) -> Any | None:
        """The table ``name`` at its latest version, ``None`` when there is none. ``reuse``:
        the one opened before (its cache warm), brought to the latest version."""
        table = self._tables.get(name) if reuse else None
        if table is not None:
            try:
                table.checkout_latest()
                return table
            except Exception:  # dropped meanwhile: open it anew
                self._tables.pop(name, None)
        try:
            table = self.connect().open_table(name)
        except ValueError as exc:
            if "not found" in str(exc):
                return None
            raise
        if reuse:
            self._tables[name] = table
        return table

    def create(self, name: str, schema: Any) -> Any:
        return self.connect().create_table(name, schema=schema, exist_ok=True)

    def erase_history(self, table: Any) -> int:
        """Rows deleted from ``table`` leave no trace: every data file with a deletion is
        rewritten, every older version removed, and (in a versioned bucket) every older object
        version under the table. The number of old versions and objects removed."""
        table.to_lance().optimize.compact_files(materialize_deletions_threshold=0.0)
        table.checkout_latest()
        stats = table.to_lance().cleanup_old_versions(timedelta(0), delete_unverified=True)
        objects = self.objects.drop_history_under(self.key(f"{table.name}.lance/"))
        return int(stats.old_versions) + objects


def delete_rows(table: Any, where: str) -> int:
    """Delete the rows ``where`` selects, by their row ids: a delete's predicate stays in the
    table's transaction log, so it must name no one (``name = 'ann'`` would keep her name in
    it after her rows are gone). The number deleted."""
    found = table.to_lance().to_table(columns=[], filter=where, with_row_id=True)
    ids = found["_rowid"].to_pylist()
    for start in range(0, len(ids), 1000):
        table.delete(f"_rowid IN ({', '.join(map(str, ids[start : start + 1000]))})")
    return len(ids)


def maintain_index(table: Any, index_min_size: int) -> None:
    """The writer's part of search: an IVF index (RaBitQ codes, inner product) once the table
    has ``index_min_size`` rows, and new rows folded into it once they are a tenth of it."""
    from lancedb.index import IvfRq

    rows = table.count_rows()
    indices = list(table.list_indices())
    if not indices:
        if rows >= index_min_size:
            table.create_index("vector", config=IvfRq(distance_type="dot"))
        return
    stats = table.index_stats(indices[0].name)
    if stats is not None and stats.num_unindexed_rows > REINDEX_SHARE * max(1, rows):
        table.to_lance().optimize.optimize_indices()


def search_rows(
    table: Any,
    query: np.ndarray,
    limit: int,
    columns: Sequence[str],
    *,
    nprobe: int = 0,
    exact: bool = False,
) -> Any:
    """The ``limit`` rows of ``table`` with the largest inner product with ``query``, best
    first, with their exact ``_distance`` (1 - similarity)."""
    search = (
        table.search(np.asarray(query, np.float32), vector_column_name="vector")
        .distance_type("dot")
        .limit(limit)
        .select([*columns, "_distance"])
    )
    if exact:
        search = search.bypass_vector_index()
    else:
        search = search.refine_factor(REFINE_FACTOR)
        if nprobe:
            search = search.nprobes(nprobe)
    return search.to_arrow()


class LanceGallery:
    """The gallery table at one version, matched as a :class:`~facepipe.identity.gallery.Gallery`
    is (see :meth:`match`); nothing is loaded into memory but what the engine caches.

    Args:
        table: the LanceDB table (checked out at the version the manifest names).
        embedder, dimension, count: from the manifest.
        nprobe: IVF partitions searched per query (0: LanceDB's default).
    """

    def __init__(
        self,
        table: Any,
        *,
        embedder: str | None,
        dimension: int,
        count: int,
        nprobe: int = 0,
    ) -> None:
        self.table = table
        self.embedder = embedder
        self.dimension = dimension
        self.count = count
        self.nprobe = nprobe

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return (
            f"LanceGallery({self.count} rows, dimension {self.dimension}, "
            f"embedder {self.embedder!r}, version {self.table.version})"
        )

    def _rows(self, queries: np.ndarray, want: int) -> list[list[tuple[float, str]]]:
        out = []
        for query in queries:
            found = search_rows(self.table, query, want, ["name"], nprobe=self.nprobe)
            sims = 1.0 - found["_distance"].to_numpy().astype(np.float64)
            out.append(list(zip(sims.tolist(), found["name"].to_pylist(), strict=True)))
        return out

    def top_people(self, queries: np.ndarray, k: int = DEFAULT_TOP_K) -> list[list[PersonScore]]:
        queries = np.asarray(queries, dtype=np.float32)
        if self.count == 0 or len(queries) == 0:
            return [[] for _ in range(len(queries))]
        return widening_top_people(self._rows, queries, k, self.count)

    def match(
        self, queries: np.ndarray, threshold: float, top_k: int = DEFAULT_TOP_K
    ) -> list[Match]:
        """As :meth:`Gallery.match`: each query's ``top_k`` people (a person's score is their
        best row's), named when the best is within ``threshold``, else ``unknown``."""
        return match_people(self, queries, threshold, top_k)


class VectorManifest(BaseModel):
    """The gallery table version readers serve, and what it holds."""

    format: Literal[1] = 1
    engine: Literal["lancedb"] = "lancedb"
    table: str = GALLERY_TABLE
    version: int
    embedder: str | None
    dimension: int
    count: int
    updated_at: str


class LanceGalleryStore(PersonCrops):
    """The gallery as a LanceDB table (``lancedb+s3://bucket/prefix`` or ``lancedb:<folder>``),
    with its manifest and crops beside it: the :class:`~facepipe.identity.gallery_store.
    GalleryBackend` of a gallery too large for one function's memory.

    Example:
        >>> store = LanceGalleryStore(LanceDatabase(LocalObjects(Path("people"))))  # doctest: +SKIP
        >>> store.add(Gallery(["ann"], rows, "dlib"), crops)  # doctest: +SKIP
        >>> store.load().match(queries, threshold=0.6)  # doctest: +SKIP
    """

    def __init__(
        self,
        database: LanceDatabase,
        *,
        index_min_size: int = INDEX_MIN_SIZE,
        index_nprobe: int = 0,
    ) -> None:
        super().__init__(database.objects, database.key(CROPS_FOLDER) + "/")
        self.database = database
        self.manifest_key = database.key(MANIFEST_FILE)
        self.index_min_size = index_min_size
        self.index_nprobe = index_nprobe

    @property
    def location(self) -> str:
        return self.database.location

    # --- reading ------------------------------------------------------------------------------
    def tag(self) -> str:
        """Changes whenever the manifest is written (after every change of the table)."""
        return f"{self.objects.tag(self.manifest_key)}"

    def manifest(self) -> VectorManifest | None:
        return read_manifest(self.objects, self.manifest_key, VectorManifest)

    def _table(self) -> Any | None:
        return self.database.open(GALLERY_TABLE)

    def status(self) -> GalleryStatus:
        if self._table() is not None:
            return "present"
        return "gone" if self.objects.tag(self.manifest_key) is not None else "missing"

    def load(self) -> LanceGallery | Gallery:
        """The table at the version its manifest names (an empty :class:`Gallery` when there
        is none yet)."""
        manifest = self.manifest()
        table = self._table()
        if manifest is None or table is None:
            return Gallery(index_min_size=self.index_min_size, index_nprobe=self.index_nprobe)
        table.checkout(manifest.version)
        return LanceGallery(
            table,
            embedder=manifest.embedder,
            dimension=manifest.dimension,
            count=manifest.count,
            nprobe=self.index_nprobe,
        )

    def embedder(self) -> str | None:
        manifest = self.manifest()
        return manifest.embedder if manifest else None

    def updated_at(self) -> str | None:
        manifest = self.manifest()
        return manifest.updated_at if manifest else None

    def _scan(self, columns: list[str], where: str | None = None) -> Any:
        import pyarrow as pa

        table = self._table()
        if table is None:
            return pa.table({c: [] for c in columns})
        return table.to_lance().to_table(columns=columns, filter=where)

    def people(self) -> dict[str, int]:
        import pyarrow.compute as pc

        counts = pc.value_counts(self._scan(["name"])["name"]).to_pylist()
        return dict(sorted((c["values"], int(c["counts"])) for c in counts))

    def rows_of(self, name: str) -> np.ndarray:
        rows = self._scan(["vector"], f"name = {sql_text(name)}")
        if not rows.num_rows:
            return np.zeros((0, 0), np.float32)
        return _column_vectors(rows)

    def export(self) -> Gallery:
        rows = self._scan(["name", "vector"])
        vectors = _column_vectors(rows) if rows.num_rows else None
        return Gallery(
            rows["name"].to_pylist(),
            vectors,
            self.embedder(),
            index_min_size=self.index_min_size,
            index_nprobe=self.index_nprobe,
        )

    # --- writing ------------------------------------------------------------------------------
    def _schema(self, dimension: int, embedder: str | None) -> Any:
        import pyarrow as pa

        return pa.schema(
            [pa.field("name", pa.string()), pa.field("vector", pa.list_(pa.float32(), dimension))],
            metadata={EMBEDDER_KEY: (embedder or "").encode()},
        )

    def add(self, rows: Gallery, crops: Mapping[str, bytes] | None = None) -> int:
        """Append ``rows`` (and write their ``crops``); the table's row count. Refuses rows of
        another embedder or dimension. Builds or updates the IVF index when due."""
        import pyarrow as pa

        manifest = self.manifest()
        table = self._table()
        if manifest is not None and len(rows):
            if manifest.count and manifest.dimension != rows.dimension:
                raise GalleryError(
                    f"cannot add {rows.dimension}-d embeddings to the {manifest.dimension}-d "
                    f"gallery at {self.location}"
                )
            if manifest.embedder and rows.embedder and manifest.embedder != rows.embedder:
                raise GalleryError(
                    f"the gallery holds {manifest.embedder} embeddings; these are "
                    f"{rows.embedder}: re-enrol everyone with one embedder"
                )
        embedder = (manifest.embedder if manifest else None) or rows.embedder
        self.put_crops(crops)
        if table is None:
            table = self.database.create(GALLERY_TABLE, self._schema(rows.dimension, embedder))
        if len(rows):
            schema = table.schema
            table.add(pa.table({"name": rows.names, "vector": _vectors(rows.embeddings)}, schema))
            maintain_index(table, self.index_min_size)
        return self._commit(table, embedder).count

    def reindex(self) -> None:
        """Build the IVF index, or fold new rows into it, when due (:func:`maintain_index`)."""
        table = self._table()
        if table is not None:
            maintain_index(table, self.index_min_size)
            self._commit(table, self.embedder())

    def _commit(self, table: Any, embedder: str | None) -> VectorManifest:
        table.checkout_latest()
        manifest = VectorManifest(
            version=table.version,
            embedder=embedder,
            dimension=table.schema.field("vector").type.list_size,
            count=table.count_rows(),
            updated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        write_manifest(self.objects, self.manifest_key, manifest)
        return manifest

    def remove(self, name: str) -> Removal:
        """Erase ``name``: their rows, every version of their crops, and every older version of
        the table (each held their rows), data files rewritten without them."""
        table = self._table()
        rows = delete_rows(table, f"name = {sql_text(name)}") if table is not None else 0
        crops = self.erase_crops(name)
        if not rows and not crops:
            raise GalleryError(f"{name!r} is not in {self.location}", code="not_found")
        old = 0
        if table is not None:
            old = self.database.erase_history(table)
            self._commit(table, self.embedder())
            old += self.objects.drop_history(self.manifest_key)
        return Removal(name, rows, crops, old)


def _album_schema(dimension: int, embedder: str) -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("id", pa.int64()),
            pa.field("photo", pa.string()),
            pa.field("box", pa.list_(pa.float32(), 4)),
            pa.field("vector", pa.list_(pa.float32(), dimension)),
            pa.field("request_id", pa.string()),
            pa.field("shard", pa.string()),
        ],
        metadata={EMBEDDER_KEY: embedder.encode()},
    )


class LanceAlbumStore:
    """Albums as LanceDB tables (one per album): :class:`~facepipe.identity.albums.AlbumStore`'s
    public methods over a vector engine, for albums of millions of faces.

    A batch's entries are one ``shard`` (the key :meth:`add` returns). A request's faces count
    once: entries of a request the album already holds (a retried record) are not added again.
    """

    def __init__(self, database: LanceDatabase, *, index_min_size: int = INDEX_MIN_SIZE) -> None:
        self.database = database
        self.objects = database.objects
        self.prefix = database.prefix  # as AlbumStore's: objects.uri(prefix) says where
        self.index_min_size = index_min_size

    @staticmethod
    def _table_name(album: str) -> str:
        return ALBUM_TABLE_PREFIX + check_album_name(album)

    def _table(self, album: str) -> Any | None:
        return self.database.open(self._table_name(album), reuse=True)

    def albums(self) -> list[str]:
        return [
            name[len(ALBUM_TABLE_PREFIX) :]
            for name in self.database.tables()
            if name.startswith(ALBUM_TABLE_PREFIX)
        ]

    def embedder_of(self, album: str) -> str | None:
        table = self._table(album)
        if table is None:
            return None
        return (table.schema.metadata or {}).get(EMBEDDER_KEY, b"").decode() or None

    def add(self, album: str, entries: Sequence[AlbumEntry], embedder: str) -> str | None:
        """Append ``entries`` as a new shard (nothing for none); refuse another embedder's."""
        import pyarrow as pa

        if not entries:
            return None
        name = self._table_name(album)
        existing = self.embedder_of(album)
        if existing is not None and existing != embedder:
            raise GalleryError(
                f"album {album!r} was indexed with the {existing} embedder, not {embedder}: "
                "index it into a new album, or set FACEPIPE_EMBEDDER to match"
            )
        vectors = np.stack([np.asarray(e.embedding, np.float32).reshape(-1) for e in entries])
        table = self.database.open(name, reuse=True)
        if table is None:
            table = self.database.create(name, _album_schema(vectors.shape[1], embedder))
        keep = self._new_requests(table, entries)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        shard = f"{stamp}-{uuid.uuid4().hex[:12]}"
        if keep:
            ids = np.frombuffer(np.random.default_rng().bytes(8 * len(keep)), np.int64)
            chosen = [entries[i] for i in keep]
            table.add(
                pa.table(
                    {
                        "id": pa.array(ids),
                        "photo": [e.photo for e in chosen],
                        "box": _vectors(np.array([list(e.box) for e in chosen], np.float32)),
                        "vector": _vectors(vectors[keep]),
                        "request_id": [e.request_id for e in chosen],
                        "shard": [shard] * len(chosen),
                    },
                    table.schema,
                )
            )
            maintain_index(table, self.index_min_size)
        return f"{self.database.location}/{name}#{shard}"

    @staticmethod
    def _new_requests(table: Any, entries: Sequence[AlbumEntry]) -> list[int]:
        """Indexes of ``entries`` whose request the album does not hold yet."""
        requests = sorted({e.request_id for e in entries if e.request_id})
        held: set[str] = set()
        if requests:
            where = f"request_id IN ({', '.join(sql_text(r) for r in requests)})"
            found = table.to_lance().to_table(columns=["request_id"], filter=where)
            held = set(found["request_id"].to_pylist())
        return [i for i, e in enumerate(entries) if not e.request_id or e.request_id not in held]

    def find(
        self,
        album: str,
        query: np.ndarray,
        *,
        threshold: float,
        embedder: str,
        limit: int = 100,
    ) -> list[AlbumHit]:
        """Photos of ``album`` holding a face within ``threshold`` (L2 between unit vectors)
        of ``query``, best first, one hit per photo (its best face)."""
        table = self._table(album)
        if table is None:
            return []
        made_with = self.embedder_of(album)
        if made_with is not None and made_with != embedder:
            raise GalleryError(
                f"album {album!r} was indexed with the {made_with} embedder; this search "
                f"embeds with {embedder}"
            )
        rows = table.count_rows()
        min_sim = 1.0 - threshold**2 / 2.0
        want = min(rows, max(limit * 2, 20))
        vector = np.asarray(query, np.float32).reshape(-1)
        while True:
            found = search_rows(table, vector, want, ["photo", "box"])
            sims = 1.0 - found["_distance"].to_numpy().astype(np.float64)
            hits = _best_per_photo(found["photo"].to_pylist(), found["box"].to_pylist(), sims)
            within = [h for h in hits if h.distance <= threshold]
            done = len(within) >= limit or len(sims) < want or want >= rows
            if done or (len(sims) and sims[-1] < min_sim):
                return within[:limit]
            want = min(rows, want * 4)

    def forget(self, embeddings: np.ndarray, threshold: float) -> int:
        """Erase, from every album, the faces within ``threshold`` of any of ``embeddings`` (a
        person's enrolment rows), by an exact scan of every face; the tables' older versions and
        rewritten data files go too. Returns how many faces were removed."""
        people = np.asarray(embeddings, np.float32)
        if people.size == 0:
            return 0
        people = people.reshape(len(people), -1)
        min_sim = 1.0 - threshold**2 / 2.0
        removed = 0
        for album in self.albums():
            table = self._table(album)
            if table is None or table.schema.field("vector").type.list_size != people.shape[1]:
                continue  # another embedder's album cannot hold this person's rows
            doomed = [
                int(face)
                for batch in _batches(table, ["id", "vector"])
                for face in np.asarray(batch["id"])[
                    ((_column_vectors(batch) @ people.T) >= min_sim).any(axis=1)
                ]
            ]
            if not doomed:
                continue
            for start in range(0, len(doomed), 1000):
                chunk = doomed[start : start + 1000]
                table.delete(f"id IN ({', '.join(map(str, chunk))})")  # random ids: no one's
            self.database.erase_history(table)
            removed += len(doomed)
        return removed


def _batches(table: Any, columns: list[str]) -> Iterator[Any]:
    yield from table.to_lance().to_batches(columns=columns, batch_size=65_536)


def _best_per_photo(
    photos: list[str], boxes: list[list[float]], sims: np.ndarray
) -> list[AlbumHit]:
    """One hit per photo, its best face (rows come best first), as AlbumStore rounds them."""
    hits: list[AlbumHit] = []
    seen: set[str] = set()
    for photo, box, sim in zip(photos, boxes, sims.tolist(), strict=True):
        if photo in seen:
            continue
        seen.add(photo)
        s = float(np.clip(sim, -1.0, 1.0))
        dist = float(np.sqrt(max(0.0, 2.0 - 2.0 * s)))
        hits.append(AlbumHit(photo, [round(float(v), 2) for v in box], round(s, 6), round(dist, 6)))
    return hits
