"""``facepipe weights fetch|check``: get embedder weights into an image (or a laptop) and prove
they load."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from facepipe.errors import ConfigError
from facepipe.identity.embedders import RANDOM_PREFIX
from facepipe.identity.facenet import WEIGHT_FILES


def register(sub: Any) -> None:
    p = sub.add_parser("weights", help="fetch or check embedder weights")
    wsub = p.add_subparsers(dest="weights_command", required=True)
    fetch = wsub.add_parser(
        "fetch",
        help="put the weights file at OUT/<embedder>.pt (+ .sha256) and check it loads",
        description="Copies the published weights file from --from-dir when it is there, else "
        "downloads it with facenet-pytorch's downloader; then loads it into InceptionResnetV1.",
    )
    fetch.add_argument("--embedder", choices=sorted(WEIGHT_FILES), default="vggface2")
    fetch.add_argument("--out", type=Path, required=True, help="directory to write into")
    fetch.add_argument("--from-dir", type=Path, help="directory that may hold the file already")
    fetch.add_argument(
        "--weights",
        default="published",
        metavar="published|random:SEED",
        help="published (default): the real file; random:SEED: seeded random weights for test "
        "images where the published file cannot be had, labelled random:SEED in every result",
    )
    fetch.set_defaults(func=run_fetch)
    check = wsub.add_parser("check", help="load a weights file and print its identifier")
    check.add_argument("path", type=Path)
    check.add_argument("--embedder", choices=sorted(WEIGHT_FILES), default="vggface2")
    check.set_defaults(func=run_check)


def run_fetch(args: argparse.Namespace) -> int:
    from facepipe.identity.facenet import FacenetEmbedder, facenet_cache_path, write_digest_sidecar
    from facepipe.identity.facenet_graph import bake_onnx

    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"{args.embedder}.pt"
    label = target.with_name(target.name + ".label")
    label.unlink(missing_ok=True)
    local = args.from_dir / WEIGHT_FILES[args.embedder] if args.from_dir else None
    if args.weights.startswith(RANDOM_PREFIX):
        import torch

        from facepipe.identity.facenet_graph import random_model

        seed = _seed(args.weights)
        torch.save(random_model(seed).state_dict(), target)
        label.write_text(f"{RANDOM_PREFIX}{seed}\n")
        print(
            f"WARNING: {target} holds seeded random weights ({RANDOM_PREFIX}{seed}), for tests "
            "only: every result says so, and no name it gives means anything",
            file=sys.stderr,
        )
    elif args.weights != "published":
        raise ConfigError(f"--weights {args.weights}: expected published or random:<seed>")
    elif local is not None and local.is_file():
        shutil.copyfile(local, target)
    else:
        # Loading with weights="" uses facenet-pytorch's cache, downloading into it if needed.
        FacenetEmbedder(args.embedder, weights="", device="cpu")
        shutil.copyfile(facenet_cache_path(args.embedder), target)
    digest = write_digest_sidecar(target)
    embedder = FacenetEmbedder(args.embedder, weights=str(target), device="cpu", mode="eager")
    # The ONNX graph the CPU embedder runs, baked beside the weights: cold starts skip building it.
    graph = bake_onnx(embedder.model, target, digest)
    print(f"{target}: {embedder.weights_id} (+ {graph.name})", file=sys.stderr)
    return 0


def _seed(weights: str) -> int:
    try:
        return int(weights[len(RANDOM_PREFIX) :])
    except ValueError as exc:
        raise ConfigError(f"--weights {weights}: expected random:<int>") from exc


def run_check(args: argparse.Namespace) -> int:
    from facepipe.identity.facenet import FacenetEmbedder

    embedder = FacenetEmbedder(args.embedder, weights=str(args.path), device="cpu")
    print(embedder.weights_id)
    return 0
