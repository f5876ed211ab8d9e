"""What each way of running InceptionResnetV1 on CPU buys (issue #7, the embedder).

``embed_levers(repeats)`` builds the network once (``random:0``: the weights do not change the
FLOPs) and measures, in this process and interleaved round by round (shared machines drift),
each lever: milliseconds per batch of 10 crops (the template's ``RecognitionBatchSize``) and of
1, GFLOP/s at 2.84 GFLOP per 160×160 face, the fraction of a 2048² float32 ``torch.matmul``
measured in the same round, the build time, and the smallest cosine of its embeddings against
eager facenet-pytorch in float32 (``eager``). Medians over the rounds.

Levers: ``eager`` (``InceptionResnetV1`` as its README runs it), ``fold`` (batch norms folded
into the convolutions), ``torch`` (folded + channels_last: ``FACEPIPE_EMBED_MODE=torch``),
``jit_freeze`` (``torch.jit.trace`` + ``freeze``, which also folds), ``jit_optimized`` (+
``optimize_for_inference``: oneDNN layouts and fusions), ``onnxruntime`` (the default,
:func:`facepipe.identity.facenet_graph.onnx_model`) at the process's threads and at one thread,
``onnxruntime_export`` (the graph ``torch.onnx.export`` writes, when the ``onnx`` package is
installed), ``bfloat16`` (lossy, opt-in) and, with ``compile=True``, ``torch.compile``
(inductor with freezing; about a minute of compiling here, which a Lambda cold start cannot pay).

Run it: ``python -m facepipe.bench.embed_levers --repeats 5`` (JSON on stdout).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import io
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from facepipe.bench.timing import FACENET_GFLOP_PER_FACE, gflops, median_ms, sgemm_ms
from facepipe.identity import facenet_graph as fr
from facepipe.vision.crops import standardize

BATCH = 10
Run = Callable[[np.ndarray], np.ndarray]


def sgemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """float32 ``torch.matmul`` of two n×n matrices: 2n³ FLOP over the median time."""
    return gflops(2 * n**3, sgemm_ms(n, repeats))


def _torch_module(model: Any, channels_last: bool = False) -> Run:
    import torch

    def run(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return np.asarray(model(x).float().numpy())

    return run


def _jit(model: Any, optimize: bool) -> Run:
    import torch

    with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.compile
        warnings.simplefilter("ignore", FutureWarning)
        example = torch.zeros(1, 3, 160, 160)
        with torch.inference_mode():
            traced = torch.jit.trace(copy.deepcopy(model), example).eval()
            frozen = (
                torch.jit.optimize_for_inference(traced) if optimize else torch.jit.freeze(traced)
            )
            for _ in range(2):  # the profiling executor optimises over the first calls
                frozen(example)
                frozen(torch.zeros(BATCH, 3, 160, 160))
    return _torch_module(frozen)


def _onnx_export(model: Any, threads: int) -> Run:
    """The graph ``torch.onnx.export`` (TorchScript exporter) writes, in the same session
    options as the default: what a hand-written graph is measured against."""
    import onnxruntime as ort
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 160, 160),),
            buffer,  # type: ignore[arg-type]  # a file-like object works too
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
            opset_version=17,
        )
    session = ort.InferenceSession(
        buffer.getvalue(), fr.ort_options(threads), providers=["CPUExecutionProvider"]
    )
    return lambda batch: np.asarray(session.run(None, {"x": batch})[0])


def _compiled(model: Any) -> Run:
    import torch
    import torch._inductor.config as inductor

    inductor.freezing = True
    compiled = torch.compile(copy.deepcopy(model).to(memory_format=torch.channels_last))
    run = _torch_module(compiled, channels_last=True)
    run(np.zeros((BATCH, 3, 160, 160), np.float32))  # compiles
    return run


def lever_builders(model: Any, threads: int, compile: bool = False) -> dict[str, Callable[[], Run]]:
    """Each lever's builder (timed as its build cost), by name."""
    builders: dict[str, Callable[[], Run]] = {
        "eager": lambda: _torch_module(model),
        "fold": lambda: _torch_module(fr.fold_batch_norms(model)),
        "torch": lambda: fr.make_runner("torch", model, "cpu", threads)[1],
        "jit_freeze": lambda: _jit(model, optimize=False),
        "jit_optimized": lambda: _jit(model, optimize=True),
        "bfloat16": lambda: fr.make_runner("bfloat16", model, "cpu", threads)[1],
    }
    if fr.onnxruntime_available():
        builders["onnxruntime"] = lambda: fr.onnx_runner(model, threads)
        if threads > 1:
            builders["onnxruntime_1_thread"] = lambda: fr.onnx_runner(model, 1)
        if importlib.util.find_spec("onnx") is not None:
            builders["onnxruntime_export"] = lambda: _onnx_export(model, threads)
    if compile:
        builders["torch_compile"] = lambda: _compiled(model)
    return builders


def min_cosine(got: np.ndarray, want: np.ndarray) -> float:
    a, b = got.astype(np.float64), want.astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.min())


def embed_levers(
    repeats: int, compile: bool = False, levers: Sequence[str] | None = None
) -> dict[str, Any]:
    """Every lever's (or those named in ``levers``) ms per batch of 10 and of 1, GFLOP/s,
    fraction of the float32 matmul peak, build seconds and min cosine vs eager float32, over
    ``repeats`` interleaved rounds."""
    import torch

    threads = torch.get_num_threads()
    model = fr.random_model(0)
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (160, 160, 3), dtype=np.uint8) for _ in range(BATCH)]
    batch = standardize(crops)
    with torch.inference_mode():
        want = model(torch.from_numpy(batch)).numpy()
    runs: dict[str, Run] = {}
    out: dict[str, dict[str, Any]] = {}
    builders = lever_builders(model, threads, compile)
    for name, build in builders.items():
        if levers is not None and name not in levers:
            continue
        start = time.perf_counter()
        runs[name] = build()
        out[name] = {
            "build_s": round(time.perf_counter() - start, 3),
            # unrounded: the exact levers differ from 1 by about 1e-13
            "min_cosine_vs_eager": min_cosine(fr.normalize(runs[name](batch)), want),
            "min_cosine_batch_1": min_cosine(fr.normalize(runs[name](batch[:1])), want[:1]),
            "lossy": name in fr.LOSSY_MODES,
        }
    rounds: dict[str, list[tuple[float, float, float]]] = {name: [] for name in runs}
    peaks: list[float] = []
    for _ in range(repeats):
        peak = sgemm_gflops()
        peaks.append(peak)
        for name, run in runs.items():
            ms = median_ms(lambda run=run: run(batch), 3)  # type: ignore[misc]
            ms1 = median_ms(lambda run=run: run(batch[:1]), 3)  # type: ignore[misc]
            rounds[name].append((ms, ms1, BATCH * FACENET_GFLOP_PER_FACE / (ms / 1000) / peak))
    for name, values in rounds.items():
        ms = statistics.median(v[0] for v in values)
        out[name].update(
            ms_batch_10=round(ms, 2),
            ms_batch_1=round(statistics.median(v[1] for v in values), 2),
            gflops=round(BATCH * FACENET_GFLOP_PER_FACE / (ms / 1000), 1),
            fraction_of_sgemm=round(statistics.median(v[2] for v in values), 4),
        )
    return {
        "threads": threads,
        "repeats": repeats,
        "batch": BATCH,
        "gflop_per_face": FACENET_GFLOP_PER_FACE,
        "sgemm_gflops": round(statistics.median(peaks), 1),
        "default_mode": fr.resolve_mode("auto", "cpu"),
        "levers": out,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile (slow)")
    parser.add_argument("--levers", help="comma-separated lever names (default: all)")
    args = parser.parse_args(argv)
    levers = args.levers.split(",") if args.levers else None
    result = embed_levers(args.repeats, compile=args.compile, levers=levers)
    for name, lever in result["levers"].items():
        print(
            f"{name:<22}{lever['ms_batch_10']:>9.1f} ms{lever['ms_batch_1']:>8.1f} ms/1"
            f"{lever['gflops']:>8.1f} GFLOP/s{lever['fraction_of_sgemm']:>7.1%}"
            f"  1-cos {1 - lever['min_cosine_vs_eager']:.1e}  build {lever['build_s']:.2f} s",
            file=sys.stderr,
        )
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
