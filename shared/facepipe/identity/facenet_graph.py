"""InceptionResnetV1 (facenet-pytorch) built fast and run fast on CPU.

Building: :func:`inception_resnet_v1` imports facenet-pytorch's model file without its package
``__init__`` (which imports torchvision and with it ``torch._dynamo``: 1.2 s of cold start), and
:func:`model_from_state` builds the network on the meta device and assigns the loaded tensors,
so no random initialisation is computed only to be overwritten.

Running (``FACEPIPE_EMBED_MODE``, see :data:`EMBED_MODES`); all but ``bfloat16`` compute the
same function as eager facenet-pytorch up to float32 rounding (1 − cosine ≈ 1e-13):

- ``onnxruntime`` (the default on CPU): :func:`onnx_model` writes the network as an ONNX graph
  straight from the weights (no tracing, no ``onnx`` package), every ``BasicConv2d`` (conv
  without bias, batch norm, ReLU) one convolution with the batch norm folded into its weights
  and bias, each residual block's scale folded into its last convolution, ``last_linear`` +
  ``last_bn`` one ``Gemm``; ONNX Runtime runs it with blocked-layout (NCHWc) convolutions that
  fuse bias, residual add and ReLU. On the 2-core AVX-512 development machine: 150 ms per batch
  of 10 (83 % of the float32 matmul peak) against eager's 279 ms (47 %); built in 0.4 s.
- ``torch``: the same batch norm folding on a copy of the module, run eagerly in channels_last
  (225 ms there): CUDA, or CPU without onnxruntime.
- ``eager``: the plain facenet-pytorch module, as its README runs it (the parity reference).
- ``bfloat16`` (lossy, opt-in): the folded channels_last module in bfloat16; fast only where
  oneDNN has AMX or AVX-512 BF16 kernels (96 ms there), much slower elsewhere. Cosine to
  float32 about 0.99999 (random weights; measure real ones with ``facepipe eval``).

``python -m facepipe.bench.embed_levers`` measures these and the levers not taken
(``torch.jit`` freeze/optimize_for_inference, ``torch.compile``, ``torch.onnx.export``, threads).
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import torch

EmbedMode = Literal["auto", "onnxruntime", "torch", "eager", "bfloat16"]
EMBED_MODES: tuple[EmbedMode, ...] = ("auto", "onnxruntime", "torch", "eager", "bfloat16")
# Lossy modes: their numbers differ from facenet-pytorch's beyond float32 rounding.
LOSSY_MODES = frozenset({"bfloat16"})
# The private package name facenet-pytorch's model files are imported under (see below).
_ALIAS = "facepipe._facenet_pytorch"

# facenet-pytorch's (untyped) modules, whose submodules the code below reaches by attribute.
Module = Any
# A runner maps a standardized float32 NCHW batch to raw (not yet normalised) embeddings.
Runner = Callable[[np.ndarray], np.ndarray]


# ---- building -----------------------------------------------------------------------------


def facenet_module(name: str) -> types.ModuleType:
    """``facenet_pytorch.<name>`` (e.g. ``models.inception_resnet_v1``) without running
    ``facenet_pytorch/__init__.py``, which imports torchvision (+1.2 s of cold start) for MTCNN.

    When the real package is already imported its module is returned. Otherwise the files are
    imported under the private package :data:`_ALIAS`, a module object whose ``__path__`` is
    facenet-pytorch's folder (``models`` and ``models/utils`` have no ``__init__.py``: namespace
    packages, so their relative imports resolve inside the alias). The real name is never
    touched, so a later ``import facenet_pytorch`` is a normal, complete import; the only cost is
    that its classes are then distinct objects from the alias's (same code, same state_dict).
    """
    if "facenet_pytorch" in sys.modules:
        return importlib.import_module(f"facenet_pytorch.{name}")
    if _ALIAS not in sys.modules:
        spec = importlib.util.find_spec("facenet_pytorch")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("facenet-pytorch is not installed (it defines InceptionResnetV1)")
        alias = types.ModuleType(_ALIAS, "facenet-pytorch's files without its __init__")
        alias.__path__ = list(spec.submodule_search_locations)
        sys.modules[_ALIAS] = alias
    return importlib.import_module(f"{_ALIAS}.{name}")


def inception_resnet_v1() -> type[Module]:
    """facenet-pytorch's ``InceptionResnetV1`` class (see :func:`facenet_module`)."""
    cls: type[Module] = facenet_module("models.inception_resnet_v1").InceptionResnetV1
    return cls


def random_model(seed: int) -> Module:
    """Exactly ``torch.manual_seed(seed); InceptionResnetV1(pretrained=None).eval()``."""
    import torch

    torch.manual_seed(seed)
    return inception_resnet_v1()(pretrained=None).eval()


def model_from_state(state: dict[str, torch.Tensor]) -> Module:
    """An eval ``InceptionResnetV1`` holding ``state``'s tensors (strict: a missing, extra or
    misshapen key raises ``RuntimeError``). Built on the meta device, so its random
    initialisation (about 0.5 s of CPU) is never computed, then the tensors are assigned."""
    import torch

    with torch.device("meta"):
        model = inception_resnet_v1()(pretrained=None)
    # float32 as the module's own parameters (assign=True would keep another dtype).
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    model.device = torch.device("cpu")  # set in __init__, where it was built on meta
    return model.eval()


# ---- batch norm folding -------------------------------------------------------------------


def folded_conv(basic: Module) -> tuple[np.ndarray, np.ndarray]:
    """A ``BasicConv2d``'s convolution with its eval batch norm folded in: weight ``W·s`` and
    bias ``β − μ·s``, ``s = γ / sqrt(σ² + ε)``."""
    conv = basic.conv
    assert conv.bias is None and conv.groups == 1 and conv.dilation == (1, 1)
    return _fold(conv.weight, basic.bn)


def folded_linear(model: Module) -> tuple[np.ndarray, np.ndarray]:
    """``last_linear`` (no bias) followed by eval ``last_bn`` as one affine map ``(W', b')``."""
    return _fold(model.last_linear.weight, model.last_bn)


def _fold(weight: torch.Tensor, bn: Module) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel ``s`` and the bias in float64 (they are small); the weights scaled in
    float32 straight from the module's memory: a float64 copy of 94 MB of weights would be
    fresh memory, and first touches of fresh memory cost more than the arithmetic here."""
    scale = _f64(bn.weight) / np.sqrt(_f64(bn.running_var) + bn.eps)
    bias = (_f64(bn.bias) - _f64(bn.running_mean) * scale).astype(np.float32)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return _f32(weight) * scale.astype(np.float32).reshape(shape), bias


def _f64(tensor: torch.Tensor) -> np.ndarray:
    return np.asarray(tensor.detach().cpu().double().numpy())


def _f32(tensor: torch.Tensor) -> np.ndarray:
    return np.asarray(tensor.detach().cpu().float().numpy())


def fold_batch_norms(model: Module) -> Module:
    """A copy of ``model`` whose ``BasicConv2d`` batch norms are folded into their convolutions
    (the torch runtimes); the copy's ``forward`` is facenet-pytorch's own."""
    import torch
    from torch import nn

    folded = copy.deepcopy(model)
    for module in folded.modules():
        if type(module).__name__ == "BasicConv2d":
            weight, bias = folded_conv(module)
            conv = module.conv
            conv.weight = nn.Parameter(torch.from_numpy(weight), requires_grad=False)
            conv.bias = nn.Parameter(torch.from_numpy(bias), requires_grad=False)
            module.bn = nn.Identity()
    return folded


# ---- ONNX graph ---------------------------------------------------------------------------
# A minimal protobuf writer for the few ONNX messages the graph needs (onnx.proto3 field
# numbers), so that building a session needs neither the `onnx` package (31 MB) nor a trace.


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 two's complement, as protobuf encodes negatives
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes | str) -> bytes:
    """A length-delimited field (string, bytes or sub-message)."""
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


_FLOAT = 1  # TensorProto.FLOAT


def _tensor_field(number: int, name: str, array: np.ndarray) -> list[bytes | memoryview]:
    """A float32 ``TensorProto`` field as chunks: a header and the array's memory (``raw_data``),
    so that the ~94 MB of weights are copied once, by the final join."""
    raw = memoryview(np.ascontiguousarray(array, dtype="<f4")).cast("B")  # type: ignore[arg-type]
    head = b"".join(_int_field(1, d) for d in array.shape) + _int_field(2, _FLOAT)
    head += _field(8, name) + _varint(9 << 3 | 2) + _varint(raw.nbytes)
    return [_varint(number << 3 | 2) + _varint(len(head) + raw.nbytes) + head, raw]


def _attribute(name: str, value: int | Sequence[int]) -> bytes:
    if isinstance(value, int):  # type INT = 2, field i = 3
        return _field(1, name) + _int_field(20, 2) + _int_field(3, value)
    ints = b"".join(_int_field(8, v) for v in value)  # type INTS = 7, field ints = 8
    return _field(1, name) + _int_field(20, 7) + ints


def _value_info(name: str, dims: Sequence[int | str]) -> bytes:
    shape = b"".join(
        _field(1, _field(2, d) if isinstance(d, str) else _int_field(1, d)) for d in dims
    )
    tensor_type = _int_field(1, _FLOAT) + _field(2, shape)
    return _field(1, name) + _field(2, _field(1, tensor_type))


class _Graph:
    """The nodes and initializers of an ONNX graph, appended in execution order."""

    def __init__(self) -> None:
        self.nodes: list[bytes] = []
        self.initializers: list[bytes | memoryview] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def constant(self, hint: str, array: np.ndarray) -> str:
        name = self.name(hint)
        self.initializers += _tensor_field(5, name, array)
        return name

    def node(
        self,
        op: str,
        inputs: Sequence[str],
        outputs: Sequence[str] = (),
        **attrs: int | Sequence[int],
    ) -> list[str]:
        outputs = list(outputs) or [self.name(op.lower())]
        body = b"".join(_field(1, i) for i in inputs) + b"".join(_field(2, o) for o in outputs)
        body += _field(4, op) + b"".join(_field(5, _attribute(k, v)) for k, v in attrs.items())
        self.nodes.append(_field(1, body))
        return outputs

    def conv(
        self,
        x: str,
        weight: np.ndarray,
        bias: np.ndarray,
        stride: Sequence[int],
        padding: Sequence[int],
        relu: bool,
    ) -> str:
        ph, pw = padding
        (y,) = self.node(
            "Conv",
            [x, self.constant("w", weight), self.constant("b", bias)],
            kernel_shape=weight.shape[2:],
            strides=list(stride),
            pads=[ph, pw, ph, pw],
        )
        return self.node("Relu", [y])[0] if relu else y

    def basic(self, x: str, basic: Module) -> str:
        """``BasicConv2d``: conv + folded batch norm + ReLU."""
        weight, bias = folded_conv(basic)
        return self.conv(x, weight, bias, basic.conv.stride, basic.conv.padding, relu=True)

    def chain(self, x: str, basics: Sequence[Module]) -> str:
        for basic in basics:
            x = self.basic(x, basic)
        return x

    def residual(self, x: str, block: Module) -> str:
        """``Block35``/``Block17``/``Block8``: ``relu(conv2d(cat(branches)) * scale + x)``, the
        scale folded into ``conv2d`` (the last block has no ReLU)."""
        branches = [block.branch0, block.branch1] + (
            [block.branch2] if hasattr(block, "branch2") else []
        )
        seqs = [list(b) if type(b).__name__ == "Sequential" else [b] for b in branches]
        (cat,) = self.node("Concat", [self.chain(x, seq) for seq in seqs], axis=1)
        scale = float(block.scale)
        up = block.conv2d
        weight = _f32(up.weight) * np.float32(scale)
        bias = _f32(up.bias) * np.float32(scale)
        y = self.conv(cat, weight, bias, (1, 1), (0, 0), relu=False)
        (out,) = self.node("Add", [y, x])
        return out if getattr(block, "noReLU", False) else self.node("Relu", [out])[0]

    def max_pool(self, x: str) -> str:
        return self.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2])[0]

    def mixed_6a(self, x: str, block: Module) -> str:
        y0 = self.basic(x, block.branch0)
        y1 = self.chain(x, list(block.branch1))
        return self.node("Concat", [y0, y1, self.max_pool(x)], axis=1)[0]

    def mixed_7a(self, x: str, block: Module) -> str:
        ys = [self.chain(x, list(b)) for b in (block.branch0, block.branch1, block.branch2)]
        return self.node("Concat", [*ys, self.max_pool(x)], axis=1)[0]


def onnx_model(model: Module) -> bytes:
    """The serialized ONNX model (opset 17) of ``model``'s eval forward pass, batch norms
    folded, up to (not including) the final L2 normalisation: input ``x`` float32
    ``(N, 3, H, W)``, output ``y`` ``(N, 512)``. Mirrors ``InceptionResnetV1.forward``; the
    parity tests check it against that.

    Kept over ``torch.onnx.export``: as fast, as exact, builds 10–100× sooner (performance.md)."""
    g = _Graph()
    x = "x"
    x = g.chain(x, [model.conv2d_1a, model.conv2d_2a, model.conv2d_2b])
    x = g.max_pool(x)
    x = g.chain(x, [model.conv2d_3b, model.conv2d_4a, model.conv2d_4b])
    for block in model.repeat_1:
        x = g.residual(x, block)
    x = g.mixed_6a(x, model.mixed_6a)
    for block in model.repeat_2:
        x = g.residual(x, block)
    x = g.mixed_7a(x, model.mixed_7a)
    for block in model.repeat_3:
        x = g.residual(x, block)
    x = g.residual(x, model.block8)
    (x,) = g.node("GlobalAveragePool", [x])
    (x,) = g.node("Flatten", [x], axis=1)  # dropout: identity in eval
    weight, bias = folded_linear(model)
    g.node("Gemm", [x, g.constant("w", weight), g.constant("b", bias)], outputs=["y"], transB=1)
    io = _field(11, _value_info("x", ["N", 3, "H", "W"])) + _field(12, _value_info("y", ["N", 512]))
    graph = [*g.nodes, _field(2, "inception_resnet_v1"), *g.initializers, io]
    size = sum(len(chunk) if isinstance(chunk, bytes) else chunk.nbytes for chunk in graph)
    head = _int_field(1, 8) + _field(2, "facepipe") + _varint(7 << 3 | 2) + _varint(size)
    opset = _field(8, _field(1, "") + _int_field(2, 17))
    return b"".join([head, *graph, opset])


# ---- runners ------------------------------------------------------------------------------


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def onnx_runner(model: Module | str | Path, threads: int) -> Runner:
    """An ONNX Runtime CPU session of :func:`onnx_model` (or of a baked ``.onnx`` file, see
    :func:`bake_onnx`) with ``threads`` intra-op threads (0: ONNX Runtime's default, one per
    physical core, as torch's)."""
    import onnxruntime as ort

    source = str(model) if isinstance(model, str | Path) else onnx_model(model)
    session = ort.InferenceSession(source, ort_options(threads), providers=["CPUExecutionProvider"])
    # The Python session keeps the serialized model (94 MB) only to rebuild itself on another
    # provider after a failure (its own comment calls that "bad"); with CPU alone that never
    # happens, so let it go. The session's C++ side has its own copy of the weights.
    if getattr(session, "_model_bytes", None) is not None:
        session._model_bytes = None

    def run(batch: np.ndarray) -> np.ndarray:
        out: np.ndarray = session.run(["y"], {"x": batch})[0]
        return out

    return run


def ort_options(threads: int) -> Any:
    """ONNX Runtime session options for the embedder: ``threads`` intra-op threads, one
    inter-op thread, every graph optimisation, and threads that spin only while a run lasts."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Threads spin between the graph's operators (not put to sleep and woken for each of its
    # ~200 nodes: one face took 17 ms without, 14 ms with, on 2 cores) and stop spinning as the
    # run returns, so a process that also runs torch (detection in the local pipeline, a worker
    # with both stages) gets its cores back: without the stop, detection right after a batch
    # ran 40 % slower.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


def torch_runner(
    model: Module, device: str, precision: str = "float32", channels_last: bool = False
) -> Runner:
    """``model`` run by torch on ``device`` (moved there, and to ``precision`` and
    ``channels_last`` in place: pass a copy to keep the original)."""
    import torch

    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    model = model.to(device=device, dtype=dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    def run(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(device=device, dtype=dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            y = model(x)
        return np.asarray(y.float().cpu().numpy())

    return run


def resolve_mode(mode: str, device: str) -> str:
    """``auto`` → ``onnxruntime`` on CPU when it is installed, else ``torch``; other modes are
    checked (``ValueError``) and returned."""
    if mode == "auto":
        return "onnxruntime" if device == "cpu" and onnxruntime_available() else "torch"
    if mode not in EMBED_MODES:
        raise ValueError(f"unknown embed mode {mode!r}; choose one of {', '.join(EMBED_MODES)}")
    if mode == "onnxruntime" and device != "cpu":
        raise ValueError("the onnxruntime embed mode runs on CPU only")
    return mode


def make_runner(mode: str, model: Module, device: str, threads: int) -> tuple[str, Runner]:
    """The runner of ``mode`` (see :func:`resolve_mode`) for ``model`` on ``device``, and the
    mode it resolved to. ``model`` itself is left as it is (``eager`` runs it)."""
    mode = resolve_mode(mode, device)
    if mode == "onnxruntime":
        return mode, onnx_runner(model, threads)
    if mode == "eager":
        return mode, torch_runner(model, device)
    precision = "bfloat16" if mode == "bfloat16" else "float32"
    return mode, torch_runner(fold_batch_norms(model), device, precision, channels_last=True)


# ---- the graph baked at image build ---------------------------------------------------------


def baked_onnx_path(weights: Path) -> Path:
    """Where :func:`bake_onnx` puts the graph of a weights file: ``<weights>.onnx``."""
    return weights.with_name(weights.name + ".onnx")


def bake_onnx(model: Module, weights: Path, digest: str) -> Path:
    """Write :func:`onnx_model` of ``model`` (built from ``weights``, whose sha256 is
    ``digest``) beside the weights, with a ``.sha256`` sidecar naming that source digest. The
    recognition image bakes it at build time (``facepipe weights fetch``), so a cold start opens
    an ONNX Runtime session from the file and builds no torch module and no graph at all."""
    path = baked_onnx_path(weights)
    path.write_bytes(onnx_model(model))
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {weights.name}\n")
    return path


def baked_onnx(weights: Path, digest: str) -> Path | None:
    """The baked graph of ``weights`` when there is one made from exactly that file (the
    sidecar names its digest); ``None`` otherwise (absent, or stale after the weights changed)."""
    path = baked_onnx_path(weights)
    sidecar = path.with_name(path.name + ".sha256")
    if not path.is_file() or not sidecar.is_file():
        return None
    return path if sidecar.read_text().split()[:1] == [digest] else None


def normalize(raw: np.ndarray) -> np.ndarray:
    """``F.normalize(x, p=2, dim=1)``: rows over ``max(‖x‖, 1e-12)``, float32."""
    norms = np.linalg.norm(raw.astype(np.float64), axis=1, keepdims=True)
    return (raw / np.maximum(norms, 1e-12)).astype(np.float32)
