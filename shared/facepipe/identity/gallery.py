"""Matching faces against a gallery of known people.

A gallery is a list of names and one unit embedding per enrolment photo: several rows may share a
name. Scores are the cosine similarity (the inner product of unit vectors) and the L2 distance
``sqrt(2 - 2·similarity)``. Each face gets its ``top_k`` closest **people**, best first: a
person's score is their best row's, so someone enrolled with ten photos is listed once. The face's
``name`` is the best person, or ``unknown`` when that person's distance is above the threshold.

Search is exact (one matrix product) below ``index_min_size`` rows and an IVF-Flat inner-product
index (faiss) from there on, because an exact scan of a million 512-d rows reads 2 GB per query:
``nlist = 4·sqrt(N)`` lists trained on a sample, ``nprobe`` of them searched per query (see
:func:`ivf_nprobe` and ``facepipe bench match``). The index keeps the only copy of the rows.

Two file formats load:

* ``.pt``: ``torch.save([embeddings, names])``, the ``data.pt`` format of the original EC2 face
  worker (embeddings a (N, 512) tensor or a list of (1, 512)/(512,) tensors);
* ``.npz``: ``numpy.savez(path, embeddings=..., names=..., embedder=...)``.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from facepipe.errors import GalleryError

UNKNOWN = "unknown"
DEFAULT_TOP_K = 5
INDEX_MIN_SIZE = 50_000  # rows from which matching uses the IVF index
TRAIN_POINTS_PER_LIST = 40  # IVF training sample: rows per list (faiss's k-means wants ≥ 39)


@dataclass(frozen=True)
class PersonScore:
    """One person's best row for a face: cosine ``similarity`` and L2 ``distance``."""

    name: str
    similarity: float
    distance: float


@dataclass(frozen=True)
class Match:
    """What the gallery says about one face.

    ``name`` is the best person, or ``unknown`` when their ``distance`` is over the threshold or
    the gallery is empty (then ``distance``/``similarity`` are ``None``); ``closest`` is the best
    person either way; ``matches`` are the top-k people, best first, whatever the threshold.
    """

    name: str
    distance: float | None
    similarity: float | None
    closest: str | None = None
    matches: tuple[PersonScore, ...] = ()


def _score(name: str, similarity: float) -> PersonScore:
    sim = float(np.clip(similarity, -1.0, 1.0))
    return PersonScore(name, sim, float(np.sqrt(max(0.0, 2.0 - 2.0 * sim))))


class Matcher(Protocol):
    """What recognition names faces with: a :class:`Gallery` in memory, or a gallery in a
    vector engine (:class:`facepipe.identity.vector_store.LanceGallery`)."""

    embedder: str | None
    dimension: int

    def __len__(self) -> int: ...

    def top_people(self, queries: np.ndarray, k: int = ...) -> list[list[PersonScore]]: ...

    def match(self, queries: np.ndarray, threshold: float, top_k: int = ...) -> list[Match]: ...


# (M, D) queries and a row count → each query's best rows as (similarity, name), best first;
# fewer than asked only when no more rows were searched.
RowSearch = Callable[[np.ndarray, int], list[list[tuple[float, str]]]]


def widening_top_people(
    search: RowSearch, queries: np.ndarray, k: int, rows: int, most_rows: int = 8
) -> list[list[PersonScore]]:
    """Each query's ``k`` best people from its best rows (a person's score is their best
    row's). The k-th distinct person is among the first k·r rows when nobody has over r rows;
    people with more rows than that are rare, so this asks for ``k·min(most_rows, 8)`` rows and
    four times as many for the queries still short of ``k`` people, until ``rows`` are asked."""
    want = min(rows, k * min(most_rows, 8))
    found: list[list[PersonScore]] = [[] for _ in range(len(queries))]
    pending = np.arange(len(queries))
    while len(pending):
        short = []
        for query, hits in zip(pending, search(queries[pending], want), strict=True):
            found[query] = aggregate_people(hits, k)
            exhausted = want >= rows or len(hits) < want
            if len(found[query]) < k and not exhausted:
                short.append(query)
        pending = np.asarray(short, dtype=np.int64)
        want = min(rows, want * 4)
    return found


def aggregate_people(hits: Iterable[tuple[float, str]], k: int) -> list[PersonScore]:
    """The first ``k`` distinct names of ``hits`` (best first), each with its best score."""
    people: list[PersonScore] = []
    seen: set[str] = set()
    for sim, name in hits:
        if name in seen:
            continue
        seen.add(name)
        people.append(_score(name, sim))
        if len(people) == k:
            break
    return people


def match_people(
    gallery: Matcher, queries: np.ndarray, threshold: float, top_k: int = DEFAULT_TOP_K
) -> list[Match]:
    """:meth:`Gallery.match` for any :class:`Matcher`: the best person names the face when
    within ``threshold``, else ``unknown``; an empty gallery names every face ``unknown``."""
    queries = np.asarray(queries, dtype=np.float32)
    if len(gallery) == 0:
        return [Match(UNKNOWN, None, None) for _ in range(len(queries))]
    if queries.shape[1:] != (gallery.dimension,):
        raise GalleryError(
            f"embedding dimension {queries.shape[-1]} does not match the gallery's "
            f"{gallery.dimension}: was the gallery made with another embedder?"
        )
    out = []
    for people in gallery.top_people(queries, max(1, top_k)):
        best = people[0]
        name = best.name if best.distance <= threshold else UNKNOWN
        out.append(Match(name, best.distance, best.similarity, best.name, tuple(people[:top_k])))
    return out


class SearchIndex(Protocol):
    """Top-``k`` rows by inner product: (M, k) similarities and row ids, best first; a row id
    of -1 (similarity ``-inf``) pads when fewer rows were searched."""

    kind: str

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def vectors(self) -> np.ndarray: ...


class ExactIndex:
    """Every row, one matrix product per batch. Ties go to the lower row."""

    kind = "exact"

    def __init__(self, vectors: np.ndarray) -> None:
        self._vectors = vectors

    def vectors(self) -> np.ndarray:
        return self._vectors

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims = queries @ self._vectors.T
        n = sims.shape[1]
        k = min(k, n)
        if k < n:
            ids = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            ids = np.broadcast_to(np.arange(n), sims.shape).copy()
        top = np.take_along_axis(sims, ids, axis=1)
        order = np.lexsort((ids, -top), axis=-1)
        return np.take_along_axis(top, order, axis=1), np.take_along_axis(ids, order, axis=1)


def ivf_nlist(n: int) -> int:
    """IVF lists for ``n`` rows: ``4·sqrt(n)``, at most one per 39 rows (faiss's k-means floor)."""
    return max(1, min(round(4 * math.sqrt(n)), n // 39))


def ivf_nprobe(nlist: int) -> int:
    """Lists searched per query: ``1.5·sqrt(nlist)``, 8 at least. ``facepipe bench match``
    measured recall@5 ≥ 0.99 against exact search with it at 100,000 and 1,000,000 rows."""
    return min(nlist, max(8, round(1.5 * math.sqrt(nlist))))


class IvfIndex:
    """faiss IVF-Flat, inner product: ``nlist`` k-means lists trained on a sample of the rows
    (``TRAIN_POINTS_PER_LIST`` per list), ``nprobe`` lists scanned exactly per query.

    The index stores the rows itself, so the gallery drops its own array once this is built.
    """

    kind = "ivf"

    def __init__(
        self,
        vectors: np.ndarray,
        *,
        nlist: int | None = None,
        nprobe: int | None = None,
        seed: int = 0,
        fp16: bool = False,
    ) -> None:
        import faiss

        n, dim = vectors.shape
        self.size = n
        self.nlist = nlist or ivf_nlist(n)
        self.nprobe = min(self.nlist, nprobe or ivf_nprobe(self.nlist))
        quantizer = faiss.IndexFlatIP(dim)
        index: Any
        if fp16:  # half the memory; similarities change by about 1e-3
            index = faiss.IndexIVFScalarQuantizer(
                quantizer,
                dim,
                self.nlist,
                faiss.ScalarQuantizer.QT_fp16,
                faiss.METRIC_INNER_PRODUCT,
            )
        else:
            index = faiss.IndexIVFFlat(quantizer, dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        sample_size = min(n, self.nlist * TRAIN_POINTS_PER_LIST)
        if sample_size < n:
            rows = np.random.default_rng(seed).choice(n, sample_size, replace=False)
            sample = vectors[np.sort(rows)]
        else:
            sample = vectors
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        del sample
        rows = np.ascontiguousarray(vectors, dtype=np.float32)
        _, assigned = index.quantizer.search(rows, 1)
        assigned = np.ascontiguousarray(assigned.ravel())
        # Size every list exactly before adding: appending row by row grows faiss's vectors by
        # doubling, which costs up to twice the rows' memory.
        lists = faiss.downcast_InvertedLists(index.invlists)
        for list_no, count in enumerate(np.bincount(assigned, minlength=self.nlist).tolist()):
            lists.resize(list_no, count)
            lists.resize(list_no, 0)  # keeps the capacity
        index.add_core(n, faiss.swig_ptr(rows), None, faiss.swig_ptr(assigned))
        index.nprobe = self.nprobe
        self._index = index
        self._direct_map = False

    @classmethod
    def from_bytes(cls, data: np.ndarray, nprobe: int | None = None) -> IvfIndex:
        """An index written by :meth:`to_bytes` (no training: seconds saved at every load)."""
        import faiss

        # deserialize_index gives the concrete class (downcasting it again would hand the
        # C++ object to a wrapper that is then freed).
        index: Any = faiss.deserialize_index(np.ascontiguousarray(data, dtype=np.uint8))
        self = cls.__new__(cls)
        self.size = int(index.ntotal)
        self.nlist = int(index.nlist)
        self.nprobe = min(self.nlist, nprobe or ivf_nprobe(self.nlist))
        index.nprobe = self.nprobe
        self._index = index
        self._direct_map = False
        return self

    def to_bytes(self) -> np.ndarray:
        import faiss

        if self._direct_map:  # not written: 8 bytes a row, rebuilt on demand
            self._index.set_direct_map_type(faiss.DirectMap.NoMap)  # type: ignore[attr-defined]
            self._direct_map = False
        return np.asarray(faiss.serialize_index(self._index), dtype=np.uint8)

    def within(self, query: np.ndarray, min_similarity: float) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the lists searched whose similarity to ``query`` is at least
        ``min_similarity``: (row ids, similarities), unordered."""
        q = np.ascontiguousarray(np.asarray(query, np.float32).reshape(1, -1))
        # faiss keeps inner products strictly over the radius.
        lims, sims, ids = self._index.range_search(q, float(np.nextafter(min_similarity, -2)))
        return ids[lims[0] : lims[1]].astype(np.int64), sims[lims[0] : lims[1]]

    @property
    def dimension(self) -> int:
        return int(self._index.d)

    def set_nprobe(self, nprobe: int) -> None:
        self.nprobe = min(self.nlist, max(1, nprobe))
        self._index.nprobe = self.nprobe

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims, ids = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return sims, ids

    def vectors(self) -> np.ndarray:
        """Every row, rebuilt from the lists (a new array: export, not search)."""
        if not self._direct_map:
            self._index.make_direct_map()  # row id → (list, offset): 8 bytes a row
            self._direct_map = True
        return np.asarray(self._index.reconstruct_n(0, self.size), dtype=np.float32)


class Gallery:
    """Known people: ``names[i]`` is the person of unit embedding row ``i``.

    Args:
        names: one name per row (one row per enrolment photo; names repeat).
        embeddings: (N, D) array-like; rows are L2-normalised here.
        embedder: the embedder that made the rows (``None`` when the file does not say).
        index_min_size: rows from which :meth:`match` searches an IVF index (built at the first
            match) instead of every row.
        index_nprobe: IVF lists searched per query (0: :func:`ivf_nprobe`).

    Example:
        >>> g = Gallery(["ann", "ann", "bob"], np.array([[1, 0], [0.8, 0.6], [0, 1]]))
        >>> m = g.match(np.array([[0.6, 0.8]], np.float32), threshold=1.1)[0]
        >>> m.name, [(p.name, round(p.similarity, 2)) for p in m.matches]
        ('ann', [('ann', 0.96), ('bob', 0.8)])
    """

    def __init__(
        self,
        names: Iterable[str] = (),
        embeddings: Any = None,
        embedder: str | None = None,
        *,
        index_min_size: int = INDEX_MIN_SIZE,
        index_nprobe: int = 0,
    ) -> None:
        self.names = [str(n) for n in names]
        raw = np.zeros((0, 512), np.float32) if embeddings is None else embeddings
        emb = np.asarray(raw, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(self.names):
            raise GalleryError(
                f"gallery has {len(self.names)} names but embeddings of shape {emb.shape}"
            )
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        self._vectors: np.ndarray | None = emb / np.maximum(norms, 1e-12)
        self.dimension = int(emb.shape[1])
        self.embedder = embedder
        self.index_min_size = index_min_size
        self.index_nprobe = index_nprobe
        self._index: SearchIndex | None = None
        self._most_rows: int | None = None

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return (
            f"Gallery({len(self)} rows of {len(set(self.names))} people, "
            f"dimension {self.dimension}, embedder {self.embedder!r})"
        )

    @property
    def embeddings(self) -> np.ndarray:
        """(N, D) unit rows. Once an IVF index holds them this is a rebuilt copy."""
        if self._vectors is not None:
            return self._vectors
        assert self._index is not None
        return self._index.vectors()

    @property
    def index_kind(self) -> str:
        """``exact`` or ``ivf``: how :meth:`match` searches (the index is built at first use)."""
        return "ivf" if len(self) >= self.index_min_size else "exact"

    def people(self) -> dict[str, int]:
        """Rows per person, by name."""
        return dict(sorted(Counter(self.names).items()))

    # --- edits (new galleries; this one is unchanged) -----------------------------------------
    def without(self, name: str) -> Gallery:
        """This gallery less every row of ``name``."""
        keep = [i for i, n in enumerate(self.names) if n != name]
        return Gallery(
            [self.names[i] for i in keep],
            self.embeddings[keep],
            self.embedder,
            index_min_size=self.index_min_size,
            index_nprobe=self.index_nprobe,
        )

    def plus(self, other: Gallery) -> Gallery:
        """Both galleries' rows (this one's first). Refuses another embedder or dimension."""
        if len(self) and len(other):
            if self.dimension != other.dimension:
                raise GalleryError(
                    f"cannot add {other.dimension}-d embeddings to a {self.dimension}-d gallery"
                )
            if self.embedder and other.embedder and self.embedder != other.embedder:
                raise GalleryError(
                    f"the gallery holds {self.embedder} embeddings; these are "
                    f"{other.embedder}: re-enrol everyone with one embedder"
                )
        if not len(self):
            return other
        if not len(other):
            return self
        return Gallery(
            self.names + other.names,
            np.concatenate([self.embeddings, other.embeddings]),
            self.embedder or other.embedder,
            index_min_size=self.index_min_size,
            index_nprobe=self.index_nprobe,
        )

    # --- search -------------------------------------------------------------------------------
    def search_index(self) -> SearchIndex:
        """The index :meth:`match` searches, built now if it is not yet (IVF: seconds to a
        minute for a million rows; the gallery's own array is released once it holds them)."""
        if self._index is None:
            assert self._vectors is not None
            if len(self) >= self.index_min_size:
                self._index = IvfIndex(self._vectors, nprobe=self.index_nprobe or None)
                self._vectors = None  # the index holds the rows now
            else:
                self._index = ExactIndex(self._vectors)
        return self._index

    def top_people(self, queries: np.ndarray, k: int = DEFAULT_TOP_K) -> list[list[PersonScore]]:
        """The ``k`` best people for each query row, best first (fewer when the gallery, or
        the index lists searched, hold fewer people)."""
        queries = np.asarray(queries, dtype=np.float32)
        if len(self) == 0 or len(queries) == 0:
            return [[] for _ in range(len(queries))]
        index = self.search_index()
        if self._most_rows is None:
            self._most_rows = max(Counter(self.names).values())

        def search(batch: np.ndarray, want: int) -> list[list[tuple[float, str]]]:
            sims, ids = index.search(batch, want)
            return [
                [(s, self.names[i]) for s, i in zip(srow, irow, strict=True) if i >= 0]
                for srow, irow in zip(sims.tolist(), ids.tolist(), strict=True)
            ]

        return widening_top_people(search, queries, k, len(self), self._most_rows)

    def match(
        self, queries: np.ndarray, threshold: float, top_k: int = DEFAULT_TOP_K
    ) -> list[Match]:
        """Name each row of ``queries`` (unit vectors, shape (M, D)) and list its ``top_k``
        people.

        >>> g = Gallery(["ann", "bob"], np.eye(2, dtype=np.float32))
        >>> [m.name for m in g.match(np.array([[1, 0], [-0.6, -0.8]], np.float32), 1.1)]
        ['ann', 'unknown']
        """
        return match_people(self, queries, threshold, top_k)

    # --- files --------------------------------------------------------------------------------
    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "gallery") -> Gallery:
        """Load a ``.npz`` or a ``.pt`` gallery from bytes (format sniffed, not guessed from the
        name: npz files are zip archives)."""
        try:
            if _is_npz(data):
                with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                    embedder = str(npz["embedder"]) if "embedder" in npz else None
                    return cls([str(n) for n in npz["names"]], npz["embeddings"], embedder or None)
            import torch

            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except GalleryError:
            raise
        except Exception as exc:
            raise GalleryError(f"{source} is not a gallery file (.npz or .pt): {exc}") from exc
        if not (isinstance(obj, list | tuple) and len(obj) == 2):
            raise GalleryError(f"{source}: expected [embeddings, names], got {type(obj).__name__}")
        raw, names = obj
        if isinstance(raw, list | tuple):
            rows = [np.asarray(t.detach().cpu() if hasattr(t, "detach") else t) for t in raw]
            emb = np.stack([r.reshape(-1) for r in rows]) if rows else np.zeros((0, 512))
        else:
            emb = np.asarray(raw.detach().cpu())
        return cls([str(n) for n in names], emb)

    def to_npz_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(
            buf,
            embeddings=self.embeddings,
            names=np.array(self.names, dtype=str),
            embedder=np.array(self.embedder or ""),
        )
        return buf.getvalue()

    def to_pt_bytes(self) -> bytes:
        """The original worker's ``[embeddings, names]`` format."""
        import torch

        buf = io.BytesIO()
        torch.save([torch.from_numpy(np.array(self.embeddings)), list(self.names)], buf)
        return buf.getvalue()

    def to_bytes(self, path: str) -> bytes:
        """``.npz`` when ``path`` ends so, else the original ``.pt`` format."""
        return self.to_npz_bytes() if path.endswith(".npz") else self.to_pt_bytes()


def _is_npz(data: bytes) -> bool:
    """npz and torch files are both zip archives; npz members are ``<array>.npy``."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return "names.npy" in zf.namelist()
    except zipfile.BadZipFile:
        return False


def build_gallery(names: Sequence[str], embeddings: np.ndarray, embedder: str) -> Gallery:
    return Gallery(list(names), np.asarray(embeddings, np.float32), embedder)
