"""`facepipe bench vectors` end to end on a small gallery: every candidate it can run here writes
the rows, a fresh process per candidate answers the queries, and the table shows each."""

from __future__ import annotations

import pytest

pytest.importorskip("lancedb", reason="the vectors extra (lancedb) is not installed")

from facepipe.bench.vectors import pgvector_unavailable, run_vectors_bench, table


def test_bench_vectors_measures_each_candidate_on_a_small_gallery() -> None:
    summary = run_vectors_bench(
        (3_000,),
        ("faiss", "lancedb", "lancedb-s3", "pgvector"),
        dim=64,
        queries=40,
        index_min_size=1_000,
        s3_queries=8,
        pg_index="hnsw",
    )
    runs = {run["candidate"]: run for run in summary["runs"]}
    for name in ("faiss", "lancedb", "lancedb-s3"):
        assert "error" not in runs[name], runs[name]
        assert runs[name]["recall_first"] == 1.0 and runs[name]["latency_ms"]["p50"] > 0
        assert runs[name]["rss_peak_bytes"] >= runs[name]["rss_bytes"] > 0
    assert runs["lancedb"]["index"] == "IvfRq" and runs["lancedb"]["ingest_rows_per_s"] > 0
    assert runs["lancedb-s3"]["s3_requests_per_query"] > 0
    why = pgvector_unavailable()
    assert ("skipped" in runs["pgvector"]) == bool(why)
    assert "error" not in runs["pgvector"], runs["pgvector"]
    assert "| 3,000 | lancedb |" in table(summary)
