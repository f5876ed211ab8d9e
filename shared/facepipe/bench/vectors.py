"""Vector store benchmark: which engine serves a gallery that outgrows one function's memory.

For each gallery size, the same synthetic face-shaped rows (:func:`facepipe.bench.match.
synthetic_faces`) go into every candidate, and a **fresh process** per candidate opens what was
written and answers single top-k queries, as a recognition function would after a cold start:

* ``faiss``: the reference, today's in-process :class:`~facepipe.identity.gallery.Gallery` (its
  IVF-Flat index built in the querying process, from the rows loaded into it);
* ``lancedb``: :class:`~facepipe.identity.vector_store.LanceGalleryStore` in a local folder
  (the writer builds its IVF index; the reader maps and caches what it searches);
* ``lancedb-s3``: the same store in a bucket of a moto S3 server on 127.0.0.1 (LanceDB's own
  S3 client, ``aws_endpoint`` + ``allow_http``), with the S3 requests of each query counted;
* ``pgvector``: PostgreSQL with the pgvector extension (an HNSW or IVFFlat inner-product index),
  at ``--pg-dsn``, or a throwaway cluster on 127.0.0.1 when this machine has the server and the
  extension (``initdb`` and ``vector.control``).

Measured per candidate: ingest rate (rows/s), index build time, single-query latency
p50/p95/p99 of ``match`` (top-k people, aggregation included; after a warm-up pass), peak and
steady resident set of the querying process (for pgvector, of its server backend), and recall
against exact search: of the best person, of the people within the threshold, of all top-k
people (as ``facepipe bench match``) and of the top-k rows (by their similarities).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from facepipe.bench.match import (
    exact_top_people,
    exact_top_rows,
    measure,
    rss_bytes,
    synthetic_faces,
)
from facepipe.identity.gallery import (
    DEFAULT_TOP_K,
    Gallery,
    Match,
    PersonScore,
    ivf_nprobe,
    match_people,
    widening_top_people,
)

CANDIDATES = ("faiss", "lancedb", "lancedb-s3", "pgvector")
BUCKET = "facepipe-bench-vectors"
WARMUP = 50


def _say(log: Any, text: str) -> None:
    if log is not None:
        print(text, file=log, flush=True)


# --- the candidates' writers (in the benchmark's process) --------------------------------------
def _write_lance(store: Any, gallery: Gallery) -> dict[str, Any]:
    """Append every row, then build the index: the time of each."""
    index_min_size, store.index_min_size = store.index_min_size, len(gallery) + 1
    start = time.perf_counter()
    store.add(gallery)
    ingest_s = time.perf_counter() - start
    store.index_min_size = index_min_size
    start = time.perf_counter()
    store.reindex()
    index_s = time.perf_counter() - start
    indices = list(store.load().table.list_indices())
    return {
        "ingest_s": round(ingest_s, 2),
        "ingest_rows_per_s": round(len(gallery) / ingest_s),
        "index_s": round(index_s, 2),
        "index": indices[0].index_type if indices else "none (exact scan)",
    }


@contextlib.contextmanager
def moto_s3() -> Iterator[tuple[str, Any, list[float]]]:
    """A moto S3 server on 127.0.0.1 with the benchmark's bucket: (endpoint, client, the
    times of the requests it has served so far)."""
    import boto3
    from moto.server import ThreadedMotoServer

    served: list[float] = []

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            served.append(record.created)

    werkzeug = logging.getLogger("werkzeug")
    handler = Count()
    werkzeug.addHandler(handler)
    werkzeug.setLevel(logging.INFO)
    werkzeug.propagate = False
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    with contextlib.redirect_stdout(sys.stderr):
        server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket=BUCKET)
        yield endpoint, s3, served
    finally:
        server.stop()
        werkzeug.removeHandler(handler)
        werkzeug.propagate = True


def s3_storage_options(endpoint: str) -> dict[str, str]:
    return {
        "aws_endpoint": endpoint,
        "allow_http": "true",
        "region": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }


def _lance_store(spec: dict[str, Any], s3: Any = None) -> Any:
    from facepipe.identity.objects import LocalObjects, Objects
    from facepipe.identity.vector_store import LanceDatabase, LanceGalleryStore

    if spec.get("endpoint"):
        from facepipe.aws.s3 import S3Objects

        if s3 is None:
            import boto3

            s3 = boto3.client(
                "s3",
                endpoint_url=spec["endpoint"],
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
        objects: Objects = S3Objects(s3, BUCKET)
        database = LanceDatabase(objects, spec["prefix"], s3_storage_options(spec["endpoint"]))
    else:
        database = LanceDatabase(LocalObjects(Path(spec["folder"])))
    return LanceGalleryStore(
        database, index_min_size=spec["index_min_size"], index_nprobe=spec.get("nprobe", 0)
    )


# --- pgvector ----------------------------------------------------------------------------------
def _pg_bin() -> Path | None:
    """The newest PostgreSQL server's bin folder with the pgvector extension installed."""
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        share = (
            subprocess.run(
                [str(folder / "pg_config"), "--sharedir"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            or f"/usr/share/postgresql/{folder.parent.name}"
        )
        if (folder / "initdb").is_file() and Path(share, "extension", "vector.control").is_file():
            return folder
    return None


def pgvector_unavailable(dsn: str = "") -> str:
    """Why pgvector cannot be measured here ("" when it can)."""
    try:
        import pgvector.psycopg  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError:
        return (
            "psycopg and pgvector (Python) are not installed: pip install psycopg[binary] pgvector"
        )
    if dsn:
        return ""
    if _pg_bin() is None:
        return (
            "no PostgreSQL server with the pgvector extension here (Debian 12 has no "
            "postgresql-15-pgvector package: build pgvector from source against "
            "postgresql-server-dev-15, or pass --pg-dsn)"
        )
    return ""


@contextlib.contextmanager
def pg_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (as the ``postgres`` user when run as root:
    initdb refuses root) in a folder of its own: its DSN; stopped and removed afterwards."""
    import socket

    bin_dir = _pg_bin()
    assert bin_dir is not None
    workdir = Path(tempfile.mkdtemp(prefix="facepipe-pg-"))
    data = workdir / "pgdata"
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        workdir.chmod(0o777)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    subprocess.run(
        [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={workdir} "
        "-c shared_buffers=2GB -c maintenance_work_mem=4GB -c max_parallel_maintenance_workers=2 "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    subprocess.run(
        [
            *as_user,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-w",
            "start",
            "-l",
            str(workdir / "pg.log"),
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    finally:
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(workdir, ignore_errors=True)


def pg_index_kind(kind: str, n: int) -> str:
    """``auto``: HNSW (the better recall/latency) up to 300,000 rows, IVFFlat above (HNSW's
    build takes most of an hour for a million 512-d rows on two cores)."""
    if kind != "auto":
        return kind
    return "hnsw" if n <= 300_000 else "ivfflat"


def _write_pg(dsn: str, names: list[str], rows: np.ndarray, kind: str) -> dict[str, Any]:
    import psycopg
    from pgvector.psycopg import register_vector

    n, dim = rows.shape
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        conn.execute("DROP TABLE IF EXISTS gallery")
        conn.execute(f"CREATE TABLE gallery (name text NOT NULL, embedding vector({dim}))")
        start = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy("COPY gallery (name, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy,
        ):
            copy.set_types(["text", "vector"])
            for name, row in zip(names, rows, strict=True):
                copy.write_row((name, row))
        ingest_s = time.perf_counter() - start
        start = time.perf_counter()
        if kind == "hnsw":
            conn.execute(
                "CREATE INDEX ON gallery USING hnsw (embedding vector_ip_ops) "
                "WITH (m = 16, ef_construction = 64)"
            )
        else:
            lists = max(1, round(n**0.5))
            conn.execute(
                f"CREATE INDEX ON gallery USING ivfflat (embedding vector_ip_ops) "
                f"WITH (lists = {lists})"
            )
        index_s = time.perf_counter() - start
        conn.execute("VACUUM ANALYZE gallery")
        sizes = conn.execute(
            "SELECT pg_table_size('gallery'), pg_indexes_size('gallery')"
        ).fetchone()
    assert sizes is not None
    return {
        "ingest_s": round(ingest_s, 2),
        "ingest_rows_per_s": round(n / ingest_s),
        "index_s": round(index_s, 2),
        "index": kind,
        "table_bytes": int(sizes[0]),
        "index_bytes": int(sizes[1]),
    }


class PgvectorGallery:
    """The benchmark's pgvector matcher: the same widening search and per-person aggregation
    as the galleries (``ORDER BY embedding <#> q``, the negative inner product)."""

    def __init__(self, dsn: str, kind: str, n: int, dim: int) -> None:
        import psycopg
        from pgvector.psycopg import register_vector

        self.conn = psycopg.connect(dsn, autocommit=True)
        register_vector(self.conn)
        if kind == "hnsw":
            self.conn.execute("SET hnsw.ef_search = 100")
        else:
            self.conn.execute(f"SET ivfflat.probes = {ivf_nprobe(max(1, round(n**0.5)))}")
        self.count, self.dimension = n, dim
        self.embedder: str | None = "synthetic"
        row = self.conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        self.backend_pid = int(row[0])

    def __len__(self) -> int:
        return self.count

    def rows(self, queries: np.ndarray, want: int) -> list[list[tuple[float, str]]]:
        out = []
        for query in queries:
            found = self.conn.execute(
                "SELECT -(embedding <#> %s) AS sim, name FROM gallery "
                "ORDER BY embedding <#> %s LIMIT %s",
                (query, query, want),
            ).fetchall()
            out.append([(float(sim), str(name)) for sim, name in found])
        return out

    def top_people(self, queries: np.ndarray, k: int = DEFAULT_TOP_K) -> list[list[PersonScore]]:
        return widening_top_people(self.rows, np.asarray(queries, np.float32), k, self.count)

    def match(
        self, queries: np.ndarray, threshold: float, top_k: int = DEFAULT_TOP_K
    ) -> list[Match]:
        return match_people(self, queries, threshold, top_k)

    def backend_rss(self) -> tuple[int, int]:
        """(peak, current) resident bytes of this connection's server process."""
        status = Path(f"/proc/{self.backend_pid}/status").read_text().splitlines()
        kb = {line.split(":")[0]: int(line.split()[1]) for line in status if "kB" in line}
        return kb.get("VmHWM", 0) * 1024, kb.get("VmRSS", 0) * 1024


# --- the querying process ----------------------------------------------------------------------
def _row_sims(candidate: str, matcher: Any, query: np.ndarray, k: int) -> list[float]:
    """The similarities of the candidate's top-``k`` rows for ``query``."""
    if candidate == "faiss":
        sims, _ = matcher.search_index().search(query[None], k)
        return [float(s) for s in sims[0] if np.isfinite(s)]
    if candidate.startswith("lancedb"):
        from facepipe.identity.vector_store import search_rows

        found = search_rows(matcher.table, query, k, ["name"], nprobe=matcher.nprobe)
        return (1.0 - found["_distance"].to_numpy().astype(np.float64)).tolist()
    return [sim for sim, _ in matcher.rows(query[None], k)[0]]


def _recall_rows(got: list[list[float]], want: np.ndarray) -> float:
    """Share of the exact top-k similarities the candidate's top-k rows hold (within 1e-5)."""
    hits = 0
    for mine, exact in zip(got, want.tolist(), strict=True):
        left = list(mine)
        for sim in exact:
            close = [i for i, s in enumerate(left) if abs(s - sim) <= 1e-5]
            if close:
                left.pop(close[0])
                hits += 1
    return round(hits / max(1, want.size), 4)


def query_child(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: open the candidate, warm it, then time and check every query."""
    work = Path(spec["workdir"])
    candidate = spec["candidate"]
    limit = spec.get("queries_limit") or None  # moto serves ranged GETs slowly: fewer on S3
    queries = np.load(work / "queries.npy")[:limit]
    want_sims = np.load(work / "want_sims.npy")[:limit]
    want_people = json.loads((work / "want_people.json").read_text())[:limit]
    warmup = min(WARMUP, len(queries) // 4) if limit else WARMUP
    base = rss_bytes()
    start = time.perf_counter()
    server_rss: tuple[int, int] | None = None
    if candidate == "faiss":
        names = np.load(work / "names.npy").tolist()
        rows = np.load(work / "rows.npy")  # as a function reads its gallery: all of it
        matcher: Any = Gallery(names, rows, "synthetic", index_min_size=spec["index_min_size"])
        del rows
        matcher.search_index()
    elif candidate.startswith("lancedb"):
        matcher = _lance_store(spec).load()
    else:
        matcher = PgvectorGallery(spec["dsn"], spec["pg_index"], spec["rows"], queries.shape[1])
    open_s = time.perf_counter() - start
    for query in queries[:warmup]:
        matcher.match(query[None], spec["threshold"], spec["top_k"])
    timed_from = time.time()
    result = measure(matcher, queries, want_people, spec["top_k"], spec["threshold"])
    result["timed"] = [timed_from, time.time()]
    result["recall_rows"] = _recall_rows(
        [_row_sims(candidate, matcher, q, spec["top_k"]) for q in queries], want_sims
    )
    if candidate == "pgvector":
        server_rss = matcher.backend_rss()
    peak = _peak_rss()
    result.update(
        open_s=round(open_s, 2),
        rss_base_bytes=base,
        rss_bytes=rss_bytes(),
        rss_peak_bytes=peak,
        queries_timed=len(queries),
    )
    if server_rss is not None:
        result.update(server_rss_peak_bytes=server_rss[0], server_rss_bytes=server_rss[1])
    return result


def _peak_rss(pid: str = "self") -> int:
    """The process's peak resident set (VmHWM). Not ``ru_maxrss``: Linux carries that over
    from before ``exec``, when a child forked from a large benchmark process counts its
    parent's pages."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _run_child(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    path = Path(spec["workdir"]) / f"spec-{spec['candidate']}.json"
    path.write_text(json.dumps(spec))
    env = dict(os.environ)
    shared = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (shared, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "facepipe.bench.vectors", str(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        return {"error": f"the querying process failed (exit {proc.returncode}): {tail}"}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# --- the run -----------------------------------------------------------------------------------
def run_vectors_bench(
    sizes: tuple[int, ...] = (100_000, 1_000_000),
    candidates: tuple[str, ...] = CANDIDATES,
    *,
    dim: int = 512,
    queries: int = 300,
    top_k: int = DEFAULT_TOP_K,
    photos: int = 5,
    latent_dim: int = 64,
    threshold: float = 1.1,
    index_min_size: int = 50_000,
    s3_max_rows: int = 100_000,
    s3_queries: int = 40,
    pg_dsn: str = "",
    pg_index: str = "auto",
    workdir: Path | None = None,
    timeout: float = 1800,
    seed: int = 0,
    log: Any = None,
) -> dict[str, Any]:
    """Every candidate at every size (see the module's docstring); the summary."""
    unknown = sorted(set(candidates) - set(CANDIDATES))
    if unknown:
        raise ValueError(f"unknown candidates {unknown}: choose from {', '.join(CANDIDATES)}")
    summary: dict[str, Any] = {
        "dim": dim,
        "queries": queries,
        "top_k": top_k,
        "photos_per_person": photos,
        "latent_dim": latent_dim,
        "threshold": threshold,
        "index_min_size": index_min_size,
        "s3_queries": s3_queries,
        "cpus": os.cpu_count(),
        "runs": [],
    }
    with contextlib.ExitStack() as stack:
        root = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vec-")))
        root.mkdir(parents=True, exist_ok=True)
        for n in sizes:
            work = root / f"n{n}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            summary["runs"] += _run_size(
                n,
                candidates,
                work,
                dim=dim,
                queries=queries,
                top_k=top_k,
                photos=photos,
                latent_dim=latent_dim,
                threshold=threshold,
                index_min_size=index_min_size,
                s3_max_rows=s3_max_rows,
                s3_queries=s3_queries,
                pg_dsn=pg_dsn,
                pg_index=pg_index,
                timeout=timeout,
                seed=seed,
                log=log,
            )
            shutil.rmtree(work, ignore_errors=True)
    return summary


def _run_size(
    n: int, candidates: tuple[str, ...], work: Path, *, log: Any, **opts: Any
) -> list[dict[str, Any]]:
    start = time.perf_counter()
    names, rows, qs, _ = synthetic_faces(
        n,
        opts["dim"],
        photos=opts["photos"],
        latent_dim=opts["latent_dim"],
        queries=opts["queries"],
        seed=opts["seed"],
    )
    top_k, photos = opts["top_k"], opts["photos"]
    want_rows = exact_top_rows(rows, qs, top_k * photos * 2)
    want_people = exact_top_people(names, rows, qs, want_rows, top_k)
    want_sims = np.stack([rows[ids] @ q for q, ids in zip(qs, want_rows[:, :top_k], strict=True)])
    np.save(work / "queries.npy", qs)
    np.save(work / "want_sims.npy", want_sims)
    (work / "want_people.json").write_text(json.dumps(want_people))
    _say(
        log,
        f"bench vectors: {n:,} rows and exact answers in {time.perf_counter() - start:.1f} s",
    )
    base = {
        "rows": n,
        "workdir": str(work),
        "top_k": top_k,
        "threshold": opts["threshold"],
        "index_min_size": opts["index_min_size"],
    }
    runs: list[dict[str, Any]] = []
    gallery = Gallery(names, rows, "synthetic")
    for candidate in candidates:
        run: dict[str, Any] = {"candidate": candidate, "rows": n, "raw_bytes": int(rows.nbytes)}
        spec = {**base, "candidate": candidate}
        try:
            with contextlib.ExitStack() as stack:
                if candidate == "faiss":
                    np.save(work / "rows.npy", rows)
                    np.save(work / "names.npy", np.array(names))
                    run["index"] = "ivf-flat" if n >= opts["index_min_size"] else "exact"
                elif candidate == "lancedb":
                    spec["folder"] = str(work / "lance")
                    run.update(_write_lance(_lance_store(spec), gallery))
                    run["stored_bytes"] = _folder_bytes(work / "lance")
                elif candidate == "lancedb-s3":
                    if n > opts["s3_max_rows"]:
                        run["skipped"] = f"above --s3-max-rows {opts['s3_max_rows']:,}"
                        runs.append(run)
                        continue
                    endpoint, s3, served = stack.enter_context(moto_s3())
                    spec.update(endpoint=endpoint, prefix=f"n{n}", queries_limit=opts["s3_queries"])
                    run.update(_write_lance(_lance_store(spec, s3), gallery))
                else:
                    why = pgvector_unavailable(opts["pg_dsn"])
                    if why:
                        run["skipped"] = why
                        runs.append(run)
                        continue
                    dsn = opts["pg_dsn"] or stack.enter_context(pg_cluster())
                    kind = pg_index_kind(opts["pg_index"], n)
                    spec.update(dsn=dsn, pg_index=kind)
                    run.update(_write_pg(dsn, names, rows, kind))
                _say(log, f"bench vectors: {n:,} rows, {candidate}: written {_brief(run)}")
                run.update(_run_child(spec, opts["timeout"]))
                if candidate == "lancedb-s3" and "timed" in run:
                    first, last = run["timed"]
                    timed = sum(first <= t <= last for t in served)
                    run["s3_requests_per_query"] = round(timed / run["queries_timed"], 1)
        except Exception as exc:  # one candidate's failure is a row of the table, not the end
            run["error"] = f"{type(exc).__name__}: {exc}"
        _say(log, f"bench vectors: {n:,} rows, {candidate}: {_brief(run)}")
        runs.append(run)
        for leftover in ("rows.npy", "names.npy", "lance"):
            path = work / leftover
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    return runs


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _brief(run: dict[str, Any]) -> str:
    keys = ("ingest_rows_per_s", "index_s", "latency_ms", "recall_rows", "rss_peak_bytes")
    return ", ".join(f"{k}={run[k]}" for k in keys if k in run) or run.get("skipped", "")


def table(summary: dict[str, Any]) -> str:
    """The figures as a Markdown table (docs/vector-stores.md)."""
    mib = 1024**2
    lines = [
        f"vectors: {summary['dim']}-d, top-{summary['top_k']}, {summary['queries']} single "
        f"queries after {WARMUP} warm-up ones, {summary['cpus']} CPUs",
        "",
        "| rows | candidate | index | ingest rows/s | index build s | open s | p50 ms | p95 ms "
        "| best person | top-k rows | peak RSS MiB | steady RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in summary["runs"]:
        if "skipped" in run or "error" in run:
            why = run.get("skipped") or run.get("error")
            lines.append(f"| {run['rows']:,} | {run['candidate']} | {why} |" + " |" * 9)
            continue
        lat = run["latency_ms"]
        peak = run.get("server_rss_peak_bytes", run["rss_peak_bytes"])
        steady = run.get("server_rss_bytes", run["rss_bytes"])
        lines.append(
            f"| {run['rows']:,} | {run['candidate']} | {run.get('index', '-')} | "
            f"{run.get('ingest_rows_per_s', '-')} | {run.get('index_s', '-')} | "
            f"{run['open_s']} | {lat['p50']} | {lat['p95']} | {run['recall_first']} | "
            f"{run['recall_rows']} | {peak / mib:.0f} | {steady / mib:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """``python -m facepipe.bench.vectors SPEC.json``: the querying process of one candidate."""
    spec = json.loads(Path(argv[0]).read_text())
    print(json.dumps(query_child(spec)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
