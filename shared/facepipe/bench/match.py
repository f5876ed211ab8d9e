"""Matching benchmark: top-k over a large synthetic gallery, one query at a time.

Measures what a recognition batch pays per face: the latency of ``Gallery.match`` for single
queries (p50/p95/p99), recall@k of the people and of the rows it returns against exact search,
the index build time, and memory: the resident-set growth of building the gallery and its
index, against the size of the raw (N, D) float32 array.

The gallery is synthetic but shaped like face embeddings: ``n / photos`` people whose identity
vectors lie in a random ``latent_dim``-dimensional subspace (so different people's cosine
similarities spread with a standard deviation near 0.1, like real impostor pairs), each enrolled
with ``photos`` rows of identity plus isotropic noise (two photos of one person: cosine ≈ 0.6).
Queries are new photos of enrolled people: their true top-k are well separated, which is the
case where recall matters.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from facepipe.bench.e2e import percentiles
from facepipe.identity.gallery import DEFAULT_TOP_K, Gallery, IvfIndex, Matcher

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


@contextmanager
def peak_rss(interval: float = 0.02) -> Iterator[dict[str, int]]:
    """Samples the resident set while the block runs; ``["peak"]`` is the largest seen."""
    seen = {"peak": rss_bytes()}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval):
            seen["peak"] = max(seen["peak"], rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()
        seen["peak"] = max(seen["peak"], rss_bytes())


def synthetic_faces(
    n: int,
    dim: int = 512,
    *,
    photos: int = 5,
    latent_dim: int = 64,
    same_person: float = 0.6,
    queries: int = 300,
    seed: int = 0,
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """``names``, unit ``rows`` (n, dim) float32, unit ``queries`` and each query's person id.

    Rows and queries of one person have cosine similarity ``same_person`` on average.
    """
    rng = np.random.default_rng(seed)
    people = max(1, n // photos)
    basis = np.linalg.qr(rng.standard_normal((dim, min(latent_dim, dim))))[0].astype(np.float32)
    identities = rng.standard_normal((people, basis.shape[1]), dtype=np.float32) @ basis.T
    identities /= np.linalg.norm(identities, axis=1, keepdims=True)
    noise = float(np.sqrt(1.0 / same_person - 1.0))

    def photos_of(ids: np.ndarray) -> np.ndarray:
        out = np.empty((len(ids), dim), np.float32)
        for start in range(0, len(ids), 100_000):  # bounded temporaries
            part = ids[start : start + 100_000]
            u = rng.standard_normal((len(part), dim), dtype=np.float32)
            u *= noise / np.linalg.norm(u, axis=1, keepdims=True)
            u += identities[part]
            u /= np.linalg.norm(u, axis=1, keepdims=True)
            out[start : start + len(part)] = u
        return out

    person_of_row = np.arange(n) % people
    rows = photos_of(person_of_row)
    names = [f"person{p:07d}" for p in person_of_row.tolist()]
    query_people = rng.integers(0, people, queries)
    return names, rows, photos_of(query_people), query_people


def exact_top_rows(rows: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best row ids per query by brute force, best first (chunked over rows)."""
    best_sims = np.full((len(queries), 0), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(rows), 200_000):
        sims = queries @ rows[start : start + 200_000].T
        take = min(k, sims.shape[1])
        ids = np.argpartition(-sims, take - 1, axis=1)[:, :take]
        best_sims = np.concatenate([best_sims, np.take_along_axis(sims, ids, 1)], axis=1)
        best_ids = np.concatenate([best_ids, ids + start], axis=1)
        keep = np.argsort(-best_sims, axis=1, kind="stable")[:, :k]
        best_sims = np.take_along_axis(best_sims, keep, 1)
        best_ids = np.take_along_axis(best_ids, keep, 1)
    return best_ids


def exact_top_people(
    names: list[str], rows: np.ndarray, queries: np.ndarray, top_rows: np.ndarray, k: int
) -> list[list[tuple[str, float]]]:
    """Each query's ``k`` best people (name, similarity) from its exact best rows."""
    out = []
    for query, ids in zip(queries, top_rows.tolist(), strict=True):
        sims = rows[ids] @ query
        people: dict[str, float] = {}
        for row, sim in zip(ids, sims.tolist(), strict=True):
            people.setdefault(names[row], sim)
        out.append(sorted(people.items(), key=lambda p: -p[1])[:k])
    return out


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    return percentiles([s * 1000.0 for s in seconds])


def _recall(got: list[list[Any]], want: list[list[Any]]) -> float:
    hits = sum(len(set(g) & set(w)) for g, w in zip(got, want, strict=True))
    return round(hits / max(1, sum(len(w) for w in want)), 4)


def measure(
    gallery: Matcher,
    queries: np.ndarray,
    want: list[list[tuple[str, float]]],
    top_k: int,
    threshold: float,
) -> dict[str, Any]:
    """Single-query latency of ``gallery.match`` and recall against exact search: of the best
    person (the name), of the people within ``threshold``, and of all top-k people."""
    latencies, got = [], []
    for query in queries:
        start = time.perf_counter()
        match = gallery.match(query[None], threshold=threshold, top_k=top_k)[0]
        latencies.append(time.perf_counter() - start)
        got.append([p.name for p in match.matches])
    min_sim = 1.0 - threshold**2 / 2.0
    within = [[name for name, sim in people if sim >= min_sim] for people in want]
    return {
        "latency_ms": percentiles_ms(latencies),
        "recall_first": _recall([g[:1] for g in got], [[w[0][0]] for w in want]),
        "recall_within": _recall(got, within),
        "recall_people": _recall(got, [[name for name, _ in people] for people in want]),
    }


def run_match_bench(
    n: int = 1_000_000,
    dim: int = 512,
    *,
    queries: int = 300,
    top_k: int = DEFAULT_TOP_K,
    photos: int = 5,
    latent_dim: int = 64,
    index_min_size: int = 50_000,
    threshold: float = 1.1,
    nprobes: tuple[int, ...] = (),
    exact_queries: int = 20,
    seed: int = 0,
    log: Any = None,
) -> dict[str, Any]:
    def say(text: str) -> None:
        if log is not None:
            print(text, file=log, flush=True)

    start = time.perf_counter()
    names, rows, qs, _ = synthetic_faces(
        n, dim, photos=photos, latent_dim=latent_dim, queries=queries, seed=seed
    )
    say(f"bench match: {n} rows × {dim} generated in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    want_rows = exact_top_rows(rows, qs, top_k * photos * 2)
    want_people = exact_top_people(names, rows, qs, want_rows, top_k)
    say(f"bench match: exact top-{top_k} of {queries} queries: {time.perf_counter() - start:.1f} s")

    raw = rows.nbytes
    before = rss_bytes()
    with peak_rss() as seen:
        start = time.perf_counter()
        gallery = Gallery(names, rows, "synthetic", index_min_size=index_min_size)
        index = gallery.search_index()
        build_s = time.perf_counter() - start
    after = rss_bytes()
    say(f"bench match: {index.kind} index built in {build_s:.1f} s")

    summary: dict[str, Any] = {
        "rows": n,
        "dim": dim,
        "people": len(set(names)),
        "photos_per_person": photos,
        "latent_dim": latent_dim,
        "queries": queries,
        "top_k": top_k,
        "threshold": threshold,
        "index": index.kind,
        "build_s": round(build_s, 2),
        "raw_bytes": raw,
        "rss_delta_bytes": after - before,
        "rss_delta_ratio": round((after - before) / raw, 3),
        "peak_delta_bytes": seen["peak"] - before,
        "peak_delta_ratio": round((seen["peak"] - before) / raw, 3),
        "cpus": os.cpu_count(),
    }
    if isinstance(index, IvfIndex):
        summary.update(nlist=index.nlist, nprobe=index.nprobe)
        _, ids = index.search(qs, top_k)
        summary["recall_rows"] = _recall(ids.tolist(), want_rows[:, :top_k].tolist())
    summary.update(measure(gallery, qs, want_people, top_k, threshold))
    sweep = []
    if isinstance(index, IvfIndex) and nprobes:
        default = index.nprobe
        for nprobe in nprobes:
            index.set_nprobe(nprobe)
            _, ids = index.search(qs, top_k)
            row = {"nprobe": index.nprobe, **measure(gallery, qs, want_people, top_k, threshold)}
            row["recall_rows"] = _recall(ids.tolist(), want_rows[:, :top_k].tolist())
            sweep.append(row)
        index.set_nprobe(default)
    summary["sweep"] = sweep
    if exact_queries:
        times = []
        for query in qs[:exact_queries]:
            start = time.perf_counter()
            exact_top_rows(rows, query[None], top_k)
            times.append(time.perf_counter() - start)
        summary["exact_single_query_ms"] = percentiles_ms(times)
    return summary


def table(summary: dict[str, Any]) -> str:
    gib = 1024**3
    lines = [
        f"match: {summary['rows']:,} rows × {summary['dim']} ({summary['people']:,} people), "
        f"top-{summary['top_k']}, {summary['queries']} single queries, "
        f"{summary['cpus']} CPUs",
        f"index: {summary['index']}"
        + (
            f" (nlist {summary['nlist']}, nprobe {summary['nprobe']})"
            if summary["index"] == "ivf"
            else ""
        )
        + f", built in {summary['build_s']} s",
        f"memory: raw array {summary['raw_bytes'] / gib:.2f} GiB; gallery + index "
        f"{summary['rss_delta_bytes'] / gib:.2f} GiB ({summary['rss_delta_ratio']}×), peak "
        f"while building {summary['peak_delta_bytes'] / gib:.2f} GiB "
        f"({summary['peak_delta_ratio']}×)",
        f"recall against exact search: first = the best person (the name), within = people "
        f"within the threshold {summary['threshold']}, people = all top-{summary['top_k']} "
        f"people, rows = the top-{summary['top_k']} rows the index returns",
        "nprobe    p50 ms   p95 ms   p99 ms    first   within   people     rows",
    ]

    def row(nprobe: Any, item: dict[str, Any]) -> str:
        lat = item["latency_ms"]
        return (
            f"{nprobe!s:<8}{lat['p50']:>8}{lat['p95']:>9}{lat['p99']:>9}"
            f"{item['recall_first']:>9}{item['recall_within']:>9}{item['recall_people']:>9}"
            f"{item.get('recall_rows', '-')!s:>9}"
        )

    for item in summary.get("sweep", []):
        lines.append(row(item["nprobe"], item))
    default = summary.get("nprobe", "exact")
    lines.append(row(f"{default}*", summary) + "   (* the default)")
    if "exact_single_query_ms" in summary:
        exact = summary["exact_single_query_ms"]
        lines.append(f"exact brute force, one query: p50 {exact['p50']} ms, p95 {exact['p95']} ms")
    return "\n".join(lines)
