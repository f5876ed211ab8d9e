"""The data plane at scale (``facepipe bench scale``, ``make bench-scale``): albums written as
the stack writes them and searched by selfie; each part writes its keys into
``bench/results/scale.json`` beside the others'.

**Album.** ``faces`` synthetic face embeddings (:func:`~facepipe.bench.match.synthetic_faces`:
people in a latent subspace, ``photos`` photos each, two faces a photo) go into a folder store
one shard per recognition batch (``shard_faces`` faces: the template's 10 frames of about two
faces), with the writers' own compaction as the stack runs it. Then a second store (another
process: nothing cached) searches for ``queries`` selfies of people in the album: the cold
search, then warm ones (p50/p95), the objects each reads (a listing counts as one), and the
recall of the person's photos against an exact search over every row, and the memory the
reader's cache of the album takes (resident-set growth while it searches).

**Results.** Clients of the local stack each send frames and wait for their own results, by
request_id through the Function URL and, as the reference in the same run, off the shared
response queue: lost, taken by the wrong client, and receives per result for each path.
"""

from __future__ import annotations

import gc
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facepipe.bench.e2e import percentiles
from facepipe.bench.match import peak_rss, rss_bytes, synthetic_faces
from facepipe.config import Settings
from facepipe.identity.album_parts import AlbumEntry
from facepipe.identity.albums import AlbumStore
from facepipe.identity.objects import CountedObjects, LocalObjects

FACES_PER_PHOTO = 2
THRESHOLD = 1.1  # L2 between unit vectors; synthetic photos of one person: about 0.9


def run_album_bench(
    faces: int,
    *,
    dim: int = 512,
    shard_faces: int = 20,
    queries: int = 200,
    photos: int = 5,
    seed: int = 0,
    root: Path | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    _, rows, selfies, _ = synthetic_faces(faces, dim, photos=photos, queries=queries, seed=seed)
    photo_of = np.array([f"photo{i // FACES_PER_PHOTO:08d}.jpg" for i in range(faces)])
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        writer = AlbumStore(LocalObjects(Path(tmp)))
        say(f"album: writing {faces} faces in shards of {shard_faces}")
        start = time.perf_counter()
        for first in range(0, faces, shard_faces):
            stop = min(faces, first + shard_faces)
            entries = [
                AlbumEntry(str(photo_of[i]), [0.0, 0.0, 1.0, 1.0], rows[i], f"r{i // 20}")
                for i in range(first, stop)
            ]
            writer.add("bench", entries, "synthetic")
        write_s = time.perf_counter() - start
        segments = writer.segments("bench")
        say(f"album: {len(segments)} segments, {writer.waiting('bench')} shards waiting")

        del writer  # and its cache: the reader is another process
        gc.collect()
        objects = CountedObjects(LocalObjects(Path(tmp)))
        reader = AlbumStore(objects)
        baseline = rss_bytes()
        with peak_rss() as rss:
            t0 = time.perf_counter()
            reader.find("bench", selfies[0], threshold=THRESHOLD, embedder="synthetic")
            cold_ms = (time.perf_counter() - t0) * 1000
            cold_reads = objects.reads()
            times, reads, hits = [], [], []
            for q in selfies:
                objects.reset()
                t0 = time.perf_counter()
                found = reader.find(
                    "bench", q, threshold=THRESHOLD, embedder="synthetic", limit=10_000
                )
                times.append((time.perf_counter() - t0) * 1000)
                reads.append(objects.reads())
                hits.append({h.photo for h in found})
        min_sim = 1.0 - THRESHOLD**2 / 2.0
        found_n = want_n = 0
        for q, got in zip(selfies, hits, strict=True):
            want = set(photo_of[np.flatnonzero(rows @ q >= min_sim)].tolist())
            found_n += len(got & want)
            want_n += len(want)
    warm = percentiles(times)
    return {
        "album_faces": faces,
        "album_shard_faces": shard_faces,
        "album_segments": len(segments),
        "album_index_faces_per_s": round(faces / write_s, 1),
        "album_find_cold_ms": round(cold_ms, 2),
        "album_find_cold_objects_read": cold_reads,
        "album_find_p50_ms": warm["p50"],
        "album_find_p95_ms": warm["p95"],
        "album_find_objects_read": max(reads),
        "album_find_recall": round(found_n / max(1, want_n), 4),
        "album_reader_rss_mb": round((rss["peak"] - baseline) / 2**20, 1),
    }


def run_album_growth(sizes: list[int], **kwargs: Any) -> dict[str, Any]:
    """:func:`run_album_bench` at each size; the largest gives the headline keys, every size a
    row of ``album_growth``."""
    rows = [run_album_bench(n, **kwargs) for n in sorted(sizes)]
    growth = [
        {
            "faces": r["album_faces"],
            "segments": r["album_segments"],
            "find_p50_ms": r["album_find_p50_ms"],
            "find_p95_ms": r["album_find_p95_ms"],
            "find_cold_ms": r["album_find_cold_ms"],
            "objects_read": r["album_find_objects_read"],
            "index_faces_per_s": r["album_index_faces_per_s"],
        }
        for r in rows
    ]
    return rows[-1] | {"album_growth": growth}


def growth_chart(summary: dict[str, Any], path: Path) -> None:
    """Album find latency (warm p50/p95, cold) and objects read against the album's size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    growth = summary["album_growth"]
    faces = [g["faces"] for g in growth]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100)
    for key, label in (
        ("find_p50_ms", "warm p50"),
        ("find_p95_ms", "warm p95"),
        ("find_cold_ms", "cold (first search)"),
    ):
        ax.plot(faces, [g[key] for g in growth], marker="o", label=label)
    ax.set(xscale="log", yscale="log", xlabel="album faces", ylabel="album find, ms")
    ax.axhline(100, color="grey", lw=0.8, ls="--")
    ax.legend(fontsize=8)
    bx.plot(faces, [g["objects_read"] for g in growth], marker="o", label="objects read, warm")
    bx.plot(faces, [g["segments"] for g in growth], marker="s", label="segments")
    bx.plot(
        faces, [f / summary["album_shard_faces"] for f in faces], ls=":", label="shards written"
    )
    bx.set(xscale="log", yscale="log", xlabel="album faces")
    bx.legend(fontsize=8)
    fig.suptitle("album search as the album grows (bench/results/scale.json)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def run_results_bench(
    settings: Settings,
    images: list[Path],
    *,
    clients: int = 8,
    frames: int = 100,
    say: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """``clients`` concurrent clients each send ``frames`` frames through the local stack and
    wait for their own results: off the shared response queue (the reference, measured in the
    same run), then by request_id through the Function URL (the O(1) path). Lost, taken by the
    wrong client, and receives (requests) per result, per path."""
    from facepipe.bench.e2e import local_endpoints, run_e2e

    out: dict[str, Any] = {"results_clients": clients, "results_frames_per_client": frames}
    with local_endpoints(settings) as (endpoints, _):
        for via in ("queue", "url"):
            say(f"results: {clients} clients x {frames} frames, results via {via}")
            run = run_e2e(
                endpoints,
                images,
                n=frames,
                concurrency=2,
                timeout=settings.poll_timeout,
                clients=clients,
                results_via=via,
            )
            key = "results" if via == "url" else "results_queue"
            out |= {
                f"{key}_lost": run["lost"],
                f"{key}_wrong_client": run["wrong_client"],
                f"{key}_receives_per_result": run["receives_per_result"],
                f"{key}_p50_ms": run["e2e_ms"]["p50"],
                f"{key}_p95_ms": run["e2e_ms"]["p95"],
            }
    out["results_receives_ratio"] = round(
        out["results_receives_per_result"] / max(out["results_queue_receives_per_result"], 1e-9),
        3,
    )
    return out


def run_gallery_bench(
    rows: int, *, dim: int = 512, queries: int = 300, log: Any = None
) -> dict[str, Any]:
    """A ``rows``-row synthetic gallery in LanceDB (a folder), queried top-5 from a fresh
    process, against today's in-process faiss gallery as the reference in the same run
    (:func:`facepipe.bench.vectors.run_vectors_bench`)."""
    from facepipe.bench.vectors import run_vectors_bench

    summary = run_vectors_bench((rows,), ("faiss", "lancedb"), dim=dim, queries=queries, log=log)
    runs = {r["candidate"]: r for r in summary["runs"] if "latency_ms" in r}
    out: dict[str, Any] = {"gallery_rows": rows, "gallery_store": "lancedb (folder)"}
    for name, key in (("lancedb", "gallery"), ("faiss", "gallery_faiss")):
        run = runs.get(name)
        if run is None:
            continue
        out |= {
            f"{key}_match_p50_ms": run["latency_ms"]["p50"],
            f"{key}_match_p95_ms": run["latency_ms"]["p95"],
            f"{key}_peak_rss_mb": round(run["rss_peak_bytes"] / 2**20, 1),
            f"{key}_open_s": run["open_s"],
            f"{key}_recall_best_person": run["recall_first"],
        }
    return out


def write_results(path: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Merge ``summary`` into the JSON at ``path`` (each part of the bench keeps the others')."""
    merged: dict[str, Any] = {}
    if path.exists():
        try:
            merged = json.loads(path.read_text())
        except ValueError:
            merged = {}
    merged.update(summary)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    return merged
