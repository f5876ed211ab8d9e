"""``facepipe bench e2e -n 100`` (requests through a stack: latency, throughput, lost),
``facepipe bench match -n 1000000`` (top-k matching at scale: latency, recall, memory),
``facepipe bench scale`` (albums, galleries and results at scale),
``facepipe bench vectors`` (vector stores for large galleries: faiss, LanceDB, pgvector) and
``facepipe bench perf`` (against plain facenet-pytorch: speed, parity, cold start, cost)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from facepipe.app.embedder_choice import for_speed
from facepipe.cli.console import reserve_stdout
from facepipe.cli.options import add_settings_flags, settings_from_args


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help="benchmarks")
    bsub = p.add_subparsers(dest="bench_command", required=True)
    e2e = bsub.add_parser(
        "e2e",
        help="N requests end to end through the local stack (default) or a deployed one",
        description="Sends N frames through a stack and waits for every result: end-to-end "
        "latency p50/p95/p99, throughput, per-stage time and lost requests. Starts the local "
        "stack unless --function-url/--local-info/--stack-name name another.",
    )
    e2e.add_argument("-n", type=int, default=100, help="requests each client sends (default 100)")
    e2e.add_argument(
        "--clients",
        type=int,
        default=1,
        metavar="K",
        help="concurrent clients, each polling for its own results only (default 1)",
    )
    e2e.add_argument(
        "--images", nargs="+", type=Path, default=None, help="frames to cycle (default samples)"
    )
    e2e.add_argument("--local-info", metavar="FILE_OR_JSON", help="a running local stack")
    e2e.add_argument("--json-out", type=Path, help="also write the summary JSON here")
    e2e.add_argument(
        "--random-weights", action="store_true", help="local stack with seeded random weights"
    )
    add_settings_flags(e2e, "models", "client", "aws", "local")
    e2e.set_defaults(func=run_e2e_command)
    match = bsub.add_parser(
        "match",
        help="top-k matching over a large synthetic gallery: latency, recall, memory, build",
        description="Builds a synthetic gallery of N rows (face-like: people in a latent "
        "subspace, several photos each), then times single-query top-k matching (p50/p95/p99 "
        "over --queries queries), its recall@k against exact search, the index build time and "
        "the memory the gallery and its index take against the raw float32 array.",
    )
    match.add_argument("-n", type=int, default=1_000_000, help="gallery rows (default 1000000)")
    match.add_argument("--dim", type=int, default=512, help="embedding dimension (default 512)")
    match.add_argument("--queries", type=int, default=300, help="single queries (default 300)")
    match.add_argument("--top-k", type=int, default=5, help="people per face (default 5)")
    match.add_argument("--photos", type=int, default=5, help="rows per person (default 5)")
    match.add_argument(
        "--latent-dim", type=int, default=64, help="identity subspace dimension (default 64)"
    )
    match.add_argument(
        "--index-min-size", type=int, default=50_000, help="rows from which the IVF index is used"
    )
    match.add_argument(
        "--threshold", type=float, default=1.1, help="match threshold for recall 'within'"
    )
    match.add_argument(
        "--nprobe-sweep",
        default="16,32,64,128",
        help="also measure these nprobe values (comma-separated; empty: none)",
    )
    match.add_argument("--json-out", type=Path, help="also write the summary JSON here")
    match.set_defaults(func=run_match_command)
    scale = bsub.add_parser(
        "scale",
        help="the data plane at scale: album find, gallery match, results per client "
        "(make bench-scale)",
        description="Each part measures one store at the size it is asked for and merges its "
        "figures into --json-out: album (faces written shard by shard as the stack writes "
        "them, compacted as writers do, then searched warm and cold by selfie).",
    )
    scale.add_argument(
        "--parts",
        default="album,gallery,results",
        help="comma-separated parts to run: album, gallery, results (default: all)",
    )
    scale.add_argument(
        "--gallery-rows", type=int, default=1_000_000, help="gallery rows (default 1000000)"
    )
    scale.add_argument(
        "--album-faces",
        default="10000,100000,1000000",
        help="album sizes, comma-separated; the largest gives the headline figures "
        "(default 10000,100000,1000000)",
    )
    scale.add_argument(
        "--shard-faces", type=int, default=20, help="faces per shard, one per batch (default 20)"
    )
    scale.add_argument("--dim", type=int, default=512, help="embedding dimension (default 512)")
    scale.add_argument(
        "--clients", type=int, default=8, help="results: concurrent clients (default 8)"
    )
    scale.add_argument(
        "--frames", type=int, default=100, help="results: frames per client (default 100)"
    )
    scale.add_argument(
        "--images", nargs="+", type=Path, default=None, help="results: frames to cycle"
    )
    scale.add_argument("--queries", type=int, default=200, help="searches timed (default 200)")
    scale.add_argument("--json-out", type=Path, help="merge the figures into this JSON file")
    add_settings_flags(scale, "models", "client", "local")
    scale.add_argument("--chart", type=Path, help="draw album find against album size here (PNG)")
    scale.set_defaults(func=run_scale_command)
    vectors = bsub.add_parser(
        "vectors",
        help="vector stores for large galleries: faiss in process, LanceDB (folder, S3), pgvector",
        description="Writes the same synthetic gallery (as `bench match` makes it) into each "
        "candidate, then opens it in a fresh process and times single top-k queries: ingest "
        "rate, index build, latency p50/p95/p99 (warm), the querying process's peak memory and "
        "recall against exact search. lancedb-s3 runs against a moto S3 server on 127.0.0.1; "
        "pgvector against --pg-dsn, or a throwaway local cluster where the server and the "
        "extension are installed (skipped, with the reason, otherwise).",
    )
    vectors.add_argument(
        "-n",
        dest="sizes",
        type=int,
        action="append",
        help="gallery rows; repeat for several sizes (default: 100000 and 1000000)",
    )
    vectors.add_argument(
        "--candidates",
        default="faiss,lancedb,lancedb-s3,pgvector",
        help="comma-separated, from faiss, lancedb, lancedb-s3, pgvector (default all)",
    )
    vectors.add_argument("--dim", type=int, default=512, help="embedding dimension (default 512)")
    vectors.add_argument("--queries", type=int, default=300, help="single queries (default 300)")
    vectors.add_argument("--top-k", type=int, default=5, help="people per face (default 5)")
    vectors.add_argument(
        "--index-min-size", type=int, default=50_000, help="rows from which an index is built"
    )
    vectors.add_argument(
        "--s3-max-rows",
        type=int,
        default=100_000,
        help="largest gallery written to the moto S3 server (default 100000: moto reads a whole "
        "object for each ranged GET, so its latency is not S3's; the requests per query are)",
    )
    vectors.add_argument(
        "--s3-queries", type=int, default=40, help="queries timed against moto (default 40)"
    )
    vectors.add_argument("--pg-dsn", default="", help="a PostgreSQL with pgvector to use")
    vectors.add_argument(
        "--pg-index",
        choices=("auto", "hnsw", "ivfflat"),
        default="auto",
        help="pgvector index (auto: HNSW up to 300,000 rows, IVFFlat above)",
    )
    vectors.add_argument("--workdir", type=Path, help="where to write (default: a temporary one)")
    vectors.add_argument("--json-out", type=Path, help="also write the summary JSON here")
    vectors.set_defaults(func=run_vectors_command)
    perf = bsub.add_parser(
        "perf",
        help="this pipeline against plain facenet-pytorch: speed, parity, GFLOP/s, cold start, "
        "end to end, modelled cost (make bench)",
        description="On the shipped samples (and the first 10 photos of ../shared/faces when "
        "present), as they are and resized to 480p/720p/1080p: warm ms per frame of plain "
        "facenet-pytorch (MTCNN(keep_all=True) + InceptionResnetV1) and of this pipeline's "
        "detection + recognition, box IoU and embedding cosine per face, embedding GFLOP/s "
        "against the float32 matmul peak, handler cold start against `import torch`, the "
        "100-request local-stack run and the modelled Lambda + SQS cost per 1,000 frames. "
        "Prints a table, writes the JSON and a PNG chart.",
    )
    perf.add_argument(
        "--quick", action="store_true", help="smoke run: samples only, 2 repeats, e2e with -n 10"
    )
    perf.add_argument(
        "--json-out",
        type=Path,
        default=Path("bench/results/latest.json"),
        help="summary JSON (default bench/results/latest.json)",
    )
    perf.add_argument(
        "--chart",
        type=Path,
        default=Path("bench/results/latest.png"),
        help="PNG bar chart (default bench/results/latest.png)",
    )
    perf.add_argument("--no-e2e", action="store_true", help="skip the local-stack run")
    perf.add_argument(
        "--no-cold-start",
        action="store_true",
        help="skip the cold-start interpreters (they need the images' packages installed, "
        "e.g. not on a GPU machine with only the pipeline's)",
    )
    perf.add_argument(
        "--random-weights",
        action="store_true",
        help="seeded random weights (random:0) for both the reference and the pipeline",
    )
    add_settings_flags(perf, "models", "detection", "client", "local")
    perf.set_defaults(func=run_perf_command)


def default_images() -> list[Path]:
    samples = Path("samples")
    return [*sorted((samples / "frames").glob("*.jpg")), samples / "astronaut.jpg"]


def run_e2e_command(args: argparse.Namespace) -> int:
    from facepipe.bench.e2e import local_endpoints, run_e2e, table
    from facepipe.client.stack import resolve_endpoints

    settings = settings_from_args(args, weights="random:0" if args.random_weights else None)
    out = reserve_stdout()  # in-process functions print their logs; stdout is for the JSON
    endpoints = resolve_endpoints(settings, local_info=args.local_info)
    with contextlib.ExitStack() as stack:
        local = None
        if not endpoints.function_url:
            print("bench: starting the local stack", file=sys.stderr)
            endpoints, local = stack.enter_context(local_endpoints(for_speed(settings)))
        summary = run_e2e(
            endpoints.require("function_url", "response_queue_url"),
            args.images or default_images(),
            n=args.n,
            concurrency=settings.concurrency,
            timeout=settings.poll_timeout,
            retries=settings.retries,
            sign=settings.sign,
            clients=args.clients,
            results_via=settings.results_via,
        )
        if local is not None:  # per stage under the RIE (--runtime rie), else the one process
            summary["peak_memory_mb"] = local.peak_memory_mb()
            summary["runtime"] = local.runtime
    print(table(summary), file=sys.stderr)
    text = json.dumps(summary, indent=2)
    print(text, file=out, flush=True)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")
    return 0 if summary["lost"] == 0 and summary["wrong_client"] == 0 else 1


def run_perf_command(args: argparse.Namespace) -> int:
    from facepipe.bench.perf import chart, run_perf, table

    settings = for_speed(
        settings_from_args(args, weights="random:0" if args.random_weights else None)
    )
    out = reserve_stdout()  # in-process functions print their logs; stdout is for the JSON
    summary = run_perf(
        settings,
        quick=args.quick,
        e2e=not args.no_e2e,
        cold=not args.no_cold_start,
        log=sys.stderr,
    )
    print(table(summary), file=sys.stderr)
    text = json.dumps(summary, indent=2)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(text + "\n")
    chart(summary, args.chart)
    print(f"bench: wrote {args.json_out} and {args.chart}", file=sys.stderr)
    print(text, file=out, flush=True)
    return 0 if summary.get("e2e_lost") in (None, 0) else 1


def run_vectors_command(args: argparse.Namespace) -> int:
    from facepipe.bench.vectors import run_vectors_bench, table

    summary = run_vectors_bench(
        tuple(args.sizes or (100_000, 1_000_000)),
        tuple(c.strip() for c in args.candidates.split(",") if c.strip()),
        dim=args.dim,
        queries=args.queries,
        top_k=args.top_k,
        index_min_size=args.index_min_size,
        s3_max_rows=args.s3_max_rows,
        s3_queries=args.s3_queries,
        pg_dsn=args.pg_dsn,
        pg_index=args.pg_index,
        workdir=args.workdir,
        log=sys.stderr,
    )
    _report(table(summary), summary, args.json_out)
    return 1 if any("error" in run for run in summary["runs"]) else 0


def _report(text_table: str, summary: dict[str, Any], json_out: Path | None) -> None:
    """The table on stderr, the summary JSON on stdout and, with ``json_out``, in that file."""
    print(text_table, file=sys.stderr)
    text = json.dumps(summary, indent=2)
    print(text, flush=True)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n")


def run_match_command(args: argparse.Namespace) -> int:
    from facepipe.bench.match import run_match_bench, table

    if args.queries < 200:
        print("bench: percentiles need at least 200 queries; using 200", file=sys.stderr)
    sweep = tuple(int(v) for v in args.nprobe_sweep.split(",") if v.strip())
    summary = run_match_bench(
        args.n,
        args.dim,
        queries=max(200, args.queries),
        top_k=args.top_k,
        photos=args.photos,
        latent_dim=args.latent_dim,
        index_min_size=args.index_min_size,
        threshold=args.threshold,
        nprobes=sweep,
        log=sys.stderr,
    )
    _report(table(summary), summary, args.json_out)
    return 0


def run_scale_command(args: argparse.Namespace) -> int:
    from facepipe.bench.scale import (
        growth_chart,
        run_album_growth,
        run_gallery_bench,
        run_results_bench,
        write_results,
    )

    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - {"album", "gallery", "results"}
    if unknown:
        print(
            f"bench scale: no part {', '.join(sorted(unknown))} (album, gallery, results)",
            file=sys.stderr,
        )
        return 2
    say = lambda line: print(f"bench scale: {line}", file=sys.stderr, flush=True)  # noqa: E731
    summary: dict[str, Any] = {}
    out = sys.stdout
    if "results" in parts:
        settings = for_speed(settings_from_args(args))
        out = reserve_stdout()  # the in-process functions print their logs
        summary |= run_results_bench(
            settings,
            args.images or default_images(),
            clients=args.clients,
            frames=args.frames,
            say=say,
        )
    if "album" in parts:
        summary |= run_album_growth(
            [int(n) for n in str(args.album_faces).split(",") if n.strip()],
            dim=args.dim,
            shard_faces=args.shard_faces,
            queries=args.queries,
            say=say,
        )
    if "gallery" in parts:
        summary |= run_gallery_bench(
            args.gallery_rows, dim=args.dim, queries=max(300, args.queries), log=sys.stderr
        )
    print(json.dumps(summary, indent=2), file=out, flush=True)
    if args.json_out:
        write_results(args.json_out, summary)
    if args.chart and "album_growth" in summary:
        growth_chart(summary, args.chart)
    failed = [k for k in ("results_lost", "results_wrong_client") if summary.get(k)]
    return 1 if failed else 0
