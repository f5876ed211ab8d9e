"""The facenet embedders: facenet-pytorch's InceptionResnetV1 and the loading of its weights.

``vggface2`` and ``casia-webface`` (:class:`FacenetEmbedder`, 512-d unit rows); the registry of
every embedder (with ``dlib``) and the :class:`~facepipe.identity.embedders.Embedder` protocol are
:mod:`facepipe.identity.embedders`'.

Facenet weights come from, in order: the file ``FACEPIPE_WEIGHTS`` names (the container images
bake the VGGFace2 file in at build time), else facenet-pytorch's own cache
(``$TORCH_HOME/checkpoints``) or download. ``random:<seed>`` builds the network with seeded
random weights for tests: numbers are consistent, names are meaningless, and every result says so.

How the network is built and run (fast cold start, ONNX Runtime on CPU, the opt-in lossy
bfloat16) is :mod:`facepipe.identity.facenet_graph`'s; ``FACEPIPE_EMBED_MODE`` chooses.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facepipe.errors import ConfigError, WeightsUnavailable
from facepipe.identity.embedders import RANDOM_PREFIX, file_digest
from facepipe.identity.facenet_graph import (
    EMBED_MODES,
    LOSSY_MODES,
    baked_onnx,
    facenet_module,
    make_runner,
    model_from_state,
    normalize,
    onnx_runner,
    random_model,
    resolve_mode,
)
from facepipe.runtime import configure_threads, resolve_device
from facepipe.vision.crops import standardize

# The files facenet-pytorch downloads for each pretrained set (its load_weights()).
WEIGHT_FILES = {
    "vggface2": "20180402-114759-vggface2.pt",
    "casia-webface": "20180408-102900-casia-webface.pt",
}
WEIGHT_URLS = {
    name: f"https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/{file}"
    for name, file in WEIGHT_FILES.items()
}


# what every "weights not available" error ends with: the choices that need no download
OFFLINE_HINT = (
    "Offline, recognise with the dlib embedder (--embedder dlib, FACEPIPE_EMBEDDER=dlib); "
    "FACEPIPE_WEIGHTS=random:0 is for tests only."
)


def facenet_cache_path(embedder: str) -> Path:
    """Where facenet-pytorch caches (and looks for) the weights of ``embedder``."""
    torch_home = facenet_module("models.inception_resnet_v1").get_torch_home()
    return Path(torch_home) / "checkpoints" / WEIGHT_FILES[embedder]


def write_digest_sidecar(path: Path) -> str:
    """Hash a weights file and write its ``<file>.sha256`` sidecar (replacing a stale one, which
    :func:`file_digest` would otherwise trust), as the image build does; the digest."""
    sidecar = path.with_name(path.name + ".sha256")
    sidecar.unlink(missing_ok=True)
    digest = file_digest(path)
    sidecar.write_text(f"{digest}  {path.name}\n")
    return digest


def weights_label(path: Path) -> str | None:
    """``random:<seed>`` for a file of seeded random weights (a ``<file>.label`` beside it, as
    ``facepipe weights fetch --weights random:<seed>`` writes for test images), else ``None``:
    results name such weights for what they are, not by their checksum."""
    label = path.with_name(path.name + ".label")
    if not label.is_file():
        return None
    text = label.read_text().strip()
    return text if text.startswith(RANDOM_PREFIX) else None


def load_state(path: Path) -> dict[str, Any]:
    """``torch.load`` of a state_dict file, memory-mapped when the file is in torch's zip
    format (the model then shares the page cache's pages instead of a private copy of 100 MB);
    older (pre-1.6, non-zip) files are read whole."""
    import torch

    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # not a zip file: mmap is not possible
        state = torch.load(path, map_location="cpu", weights_only=True)
    return state


class FacenetEmbedder:
    """InceptionResnetV1 → 512-d unit embeddings of 160×160 uint8 RGB crops.

    Args:
        embedder: ``"vggface2"`` or ``"casia-webface"``: which pretrained set the weights are.
        weights: a state_dict path, ``""`` for facenet-pytorch's cache/download, or
            ``"random:<seed>"`` (exactly ``torch.manual_seed(seed);
            InceptionResnetV1(pretrained=None).eval()``).
        device: torch device string, or ``"auto"``.
        mode: how the network runs (``FACEPIPE_EMBED_MODE``, see
            :mod:`facepipe.identity.facenet_graph`): ``auto`` (ONNX Runtime on CPU, folded torch
            elsewhere), ``onnxruntime``, ``torch``, ``eager`` or the lossy ``bfloat16``.
        threads: intra-op threads of the runner (0: torch's, one per core).

    A weights file with a matching baked graph beside it (``<file>.onnx``, see
    :func:`facepipe.identity.facenet_graph.bake_onnx`; the recognition image has one) runs that
    graph on ONNX Runtime directly: no torch import, no module built, unless ``model`` is asked for.

    ``model`` is always the plain eval facenet-pytorch module holding the weights (the parity
    reference); ``embed`` runs the mode's own copy of them.

    Example:
        >>> import numpy as np
        >>> emb = FacenetEmbedder(weights="random:0")
        >>> emb.embed([np.zeros((160, 160, 3), np.uint8)]).shape
        (1, 512)
    """

    dim = 512

    def __init__(
        self,
        embedder: str = "vggface2",
        weights: str = "",
        device: str = "auto",
        mode: str = "auto",
        threads: int = 0,
    ):
        if embedder not in WEIGHT_FILES:
            raise ConfigError(
                f"unknown embedder {embedder!r}; choose one of {', '.join(WEIGHT_FILES)}"
            )
        if mode not in EMBED_MODES:
            raise ConfigError(
                f"FACEPIPE_EMBED_MODE={mode!r}: choose one of {', '.join(EMBED_MODES)}"
            )
        self.name = embedder
        self.device = resolve_device(device)
        self._model: Any = None
        self._path: Path | None = None
        if weights.startswith(RANDOM_PREFIX):
            try:
                seed = int(weights[len(RANDOM_PREFIX) :])
            except ValueError as exc:
                raise ConfigError(f"FACEPIPE_WEIGHTS={weights!r}: expected random:<int>") from exc
            self._model = random_model(seed).to(self.device)
            self.weights_id = f"random:{seed}"
        else:
            self._path = self._locate(weights)
            digest = file_digest(self._path)
            self.weights_id = weights_label(self._path) or f"{embedder}:sha256:{digest[:16]}"
            baked = baked_onnx(self._path, digest)
            if baked is not None and self._resolve(mode) == "onnxruntime":
                # The image's cold start: a session from the baked graph, no torch at all.
                self.mode, self._run = "onnxruntime", onnx_runner(baked, threads)
                return
        configure_threads(threads)  # a torch path from here on (the module, or its graph)
        try:
            self.mode, self._run = make_runner(
                mode, self.model, self.device, self._threads(threads)
            )
        except (ValueError, ImportError) as exc:
            raise ConfigError(f"FACEPIPE_EMBED_MODE={mode}: {exc}") from exc

    def _resolve(self, mode: str) -> str:
        try:
            return resolve_mode(mode, self.device)
        except ValueError as exc:
            raise ConfigError(f"FACEPIPE_EMBED_MODE={mode}: {exc}") from exc

    @staticmethod
    def _threads(threads: int) -> int:
        if threads > 0:
            return threads
        import torch

        return torch.get_num_threads()

    @property
    def model(self) -> Any:
        """The plain eval facenet-pytorch ``InceptionResnetV1`` holding the weights (the parity
        reference; the torch modes run a copy of it), built on first use when ``embed`` runs
        the baked ONNX graph."""
        if self._model is None:
            assert self._path is not None
            state = load_state(self._path)
            # The published files include the classifier head; embeddings do not use it.
            state = {k: v for k, v in state.items() if not k.startswith("logits.")}
            try:
                self._model = model_from_state(state).to(self.device)
            except RuntimeError as exc:
                raise WeightsUnavailable(
                    f"{self._path} is not an InceptionResnetV1 state_dict ({exc})"
                ) from exc
        return self._model

    @property
    def is_lossy(self) -> bool:
        """True when ``embed`` differs from facenet-pytorch by more than float32 rounding."""
        return self.mode in LOSSY_MODES

    @property
    def is_random(self) -> bool:
        return self.weights_id.startswith(RANDOM_PREFIX)

    def _locate(self, weights: str) -> Path:
        if weights:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise WeightsUnavailable(
                    f"FACEPIPE_WEIGHTS={weights} does not exist. Point it at the "
                    f"{WEIGHT_FILES[self.name]} file ({WEIGHT_URLS[self.name]}). {OFFLINE_HINT}"
                )
            return path
        cached = facenet_cache_path(self.name)
        if cached.is_file():
            return cached
        try:
            download_url_to_file = facenet_module("models.utils.download").download_url_to_file
            cached.parent.mkdir(parents=True, exist_ok=True)
            download_url_to_file(WEIGHT_URLS[self.name], str(cached), progress=False)
        except Exception as exc:  # no network, proxy, disk: all mean the same to the user
            raise WeightsUnavailable(
                f"the {self.name} weights are not available: no FACEPIPE_WEIGHTS file, none in "
                f"facenet-pytorch's cache ({cached}) and the download failed ({exc}). Download "
                f"{WEIGHT_URLS[self.name]} on a connected machine and set FACEPIPE_WEIGHTS to "
                f"its path (the container images bake it in). {OFFLINE_HINT}"
            ) from exc
        return cached

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Embed uint8 HxWx3 crops in one forward pass → float32 (N, 512) unit vectors."""
        if len(crops) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return normalize(self._run(standardize(crops)))


def default_weights_note(weights_id: str) -> str | None:
    """A warning for people when the weights cannot recognise anyone."""
    if weights_id.startswith(RANDOM_PREFIX):
        return (
            f"WARNING: embeddings use seeded random weights ({weights_id}); names are "
            "meaningless. Set FACEPIPE_WEIGHTS to the VGGFace2 file for real recognition."
        )
    return None
