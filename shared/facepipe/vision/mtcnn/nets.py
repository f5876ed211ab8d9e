"""MTCNN's P-, R- and O-nets: facenet-pytorch's architectures and weights, on faster kernels."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn


def weights_dir() -> Path:
    """facenet-pytorch's ``data`` folder (its bundled MTCNN weights), found without importing
    the package (whose ``__init__`` imports torchvision)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("facenet-pytorch is not installed (it ships the MTCNN weights)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


class PNet(nn.Module):
    """MTCNN P-net (facenet-pytorch's ``PNet``, same parameters)."""

    heads_weight: torch.Tensor
    heads_bias: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)
        # Both 1×1 heads stacked (2 + 4 outputs), filled by :meth:`weights_loaded` once
        # the weights are loaded rather than concatenated on every call.
        self.register_buffer("heads_weight", torch.zeros(6, 32), persistent=False)
        self.register_buffer("heads_bias", torch.zeros(6), persistent=False)
        self.slopes = {name: SlopeTiles() for name in ("prelu1", "prelu2", "prelu3")}

    def weights_loaded(self) -> None:
        """Refresh what is derived from the weights: the stacked heads, the slope tiles."""
        for tiles in self.slopes.values():
            tiles.tile = None
        with torch.no_grad():
            self.heads_weight.copy_(
                torch.cat((self.conv4_1.weight, self.conv4_2.weight)).view(6, 32)
            )
            bias_1, bias_2 = self.conv4_1.bias, self.conv4_2.bias
            assert bias_1 is not None and bias_2 is not None  # Conv2d(bias=True)
            self.heads_bias.copy_(torch.cat((bias_1, bias_2)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The PReLUs and the 2×2 pool as row-wise passes over channels-last memory (same
        # values as ``self.prelu*`` / ``self.pool1``; see :func:`_prelu`, :func:`_max_pool_2x2`).
        x = _max_pool_2x2(self._prelu(self.conv1(x), "prelu1"))
        x = self._prelu(self.conv2(x), "prelu2")
        x = self._prelu(self.conv3(x), "prelu3")
        # Both 1×1 heads as one matrix product, weights (6 × 32) times the channels-last rows
        # transposed (32 × cells): 2 + 4 output planes, channels-first, as facenet-pytorch's
        # two 1×1 convolutions give them (its softmax then runs over the same layout). oneDNN's
        # 1×1 convolutions with 2 and 4 outputs took twice as long for the same sums, a linear
        # over the rows (cells × 6) 1.2–1.9× as long.
        n, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(-1, c)
        heads = torch.addmm(self.heads_bias[:, None], self.heads_weight, rows.T)
        heads = heads.view(6, n, h, w).transpose(0, 1)
        return heads[:, 2:], torch.softmax(heads[:, :2], dim=1)

    def _prelu(self, x: torch.Tensor, name: str) -> torch.Tensor:
        weight = getattr(self, name).weight
        return _prelu(x, self.slopes[name].row(weight, x.shape[3]))


class SlopeTiles:
    """A PReLU's ``C`` slopes tiled along a channels-last row of ``W`` pixels: :meth:`row` is
    ``weight.repeat(W)``, as a prefix view of one tile kept from call to call (grown when a
    wider map comes) rather than a new tensor on each of the P-net's ~35 PReLU calls per frame
    (a fresh ``repeat`` per call was 3 % of detection at 480p and 1080p)."""

    def __init__(self) -> None:
        self.tile: torch.Tensor | None = None

    def row(self, weight: torch.Tensor, width: int) -> torch.Tensor:
        length = width * len(weight)
        tile = self.tile  # one read: another thread may grow it meanwhile
        if tile is None or len(tile) < length or tile.device != weight.device:
            tile = self.tile = weight.detach().repeat(width)
        return tile[:length]


def _prelu(x: torch.Tensor, slopes: torch.Tensor) -> torch.Tensor:
    """``prelu(x, weight)`` of an ``N×C×H×W`` map in channels-last memory, computed as one pass
    over ``N·H`` rows of ``W·C`` values with ``slopes``, the weight tiled along the row
    (``weight.repeat(W)``, see :class:`SlopeTiles`). torch's own channels-last PReLU broadcasts
    the ``C`` slopes over the innermost dimension, which for the P-net's 10–32 channels runs at
    half the speed; the values are the same (the same ``x if x > 0 else a·x`` per element)."""
    n, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(n * h, w * c)
    out = torch.nn.functional.prelu(rows, slopes)
    return out.view(n, h, w, c).permute(0, 3, 1, 2)


def _max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``MaxPool2d(2, 2, ceil_mode=True)`` of a channels-last map as two element-wise maxima
    (row pairs, then column pairs, over strided views); an odd last row or column is its own
    window, as in ceil mode. Maxima are exact, so the values are the pool's; 3× faster than the
    channels-last pooling kernel on the P-net's 10-channel maps."""
    n, c, h, w = x.shape
    nhwc = x.permute(0, 2, 3, 1)
    rows = torch.empty((n, (h + 1) // 2, w, c), dtype=x.dtype, device=x.device)
    torch.maximum(nhwc[:, 0 : h - 1 : 2], nhwc[:, 1:h:2], out=rows[:, : h // 2])
    if h % 2:
        rows[:, -1] = nhwc[:, -1]
    out = torch.empty((n, (h + 1) // 2, (w + 1) // 2, c), dtype=x.dtype, device=x.device)
    torch.maximum(rows[:, :, 0 : w - 1 : 2], rows[:, :, 1:w:2], out=out[:, :, : w // 2])
    if w % 2:
        out[:, :, -1] = rows[:, :, -1]
    return out.permute(0, 3, 1, 2)


class OneDnnConv:
    """A convolution run by oneDNN on its own blocked tensors (``torch.mkldnn_convolution``),
    with the weights reordered into oneDNN's layout once instead of on every call (as
    ``torch.utils.mkldnn.to_mkldnn`` does, without its deprecated TorchScript modules)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        assert isinstance(conv.padding, tuple)  # the MTCNN nets' convolutions: no padding
        self.padding = list(conv.padding)
        self.stride = list(conv.stride)
        self.dilation = list(conv.dilation)
        self.groups = conv.groups
        self.weight = torch._C._nn.mkldnn_reorder_conv2d_weight(
            conv.weight.detach().to_mkldnn(), self.padding, self.stride, self.dilation, self.groups
        )
        self.bias = None if conv.bias is None else conv.bias.detach()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mkldnn_convolution(
            x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups
        )


# One trunk layer of the R- or O-net: a convolution (torch's module or :class:`OneDnnConv`), its
# PReLU and its max-pool (none after the last convolution).
Layer = tuple[Callable[[torch.Tensor], torch.Tensor], nn.PReLU, nn.MaxPool2d | None]


def onednn_available() -> bool:
    """Whether this torch has oneDNN and the two calls :class:`OneDnnConv` makes (one is
    private, as in ``torch.utils.mkldnn``); without them the nets stay channels-last."""
    return (
        bool(torch.backends.mkldnn.is_available())
        and hasattr(torch, "mkldnn_convolution")
        and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight")
    )


def _run_layers(layers: Sequence[Layer], x: torch.Tensor) -> torch.Tensor:
    for conv, prelu, pool in layers:
        x = prelu(conv(x))
        if pool is not None:
            x = pool(x)
    return x


class _CropNet(nn.Module):
    """The R- and O-net's common trunk, ``convN → preluN (→ poolN)`` for N = 1 … :attr:`depth`,
    run on channels-last tensors as loaded (the CUDA path) or, after :meth:`use_onednn`, on
    oneDNN's blocked tensors from the first layer to the last (the CPU path): there the R-net
    takes 0.80–0.90× the channels-last time (50–386 crops), the O-net 0.87–0.98× (7–40 crops).
    The P-net is faster channels-last (its 10- and 16-channel maps padded to oneDNN's
    16-channel blocks: 1.1–2.6× slower)."""

    depth: int
    onednn: list[Layer]

    def __init__(self) -> None:
        super().__init__()
        self.onednn = []  # see use_onednn

    def trunk(self) -> list[tuple[nn.Conv2d, nn.PReLU, nn.MaxPool2d | None]]:
        return [
            (getattr(self, f"conv{i}"), getattr(self, f"prelu{i}"), getattr(self, f"pool{i}", None))
            for i in range(1, self.depth + 1)
        ]

    def use_onednn(self) -> None:
        """Run the trunk on oneDNN's tensors (CPU), with the weights as they are now."""
        self.onednn = [(OneDnnConv(conv), prelu, pool) for conv, prelu, pool in self.trunk()]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk's output, a plain ``N×C×H×W`` tensor on the oneDNN path."""
        if self.onednn:
            return _run_layers(self.onednn, x.to_mkldnn()).to_dense()
        return _run_layers(self.trunk(), x)


class RNet(_CropNet):
    """MTCNN R-net (facenet-pytorch's ``RNet``, same parameters)."""

    depth = 3

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features(x).permute(0, 3, 2, 1).contiguous()
        x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)


class ONet(_CropNet):
    """MTCNN O-net (facenet-pytorch's ``ONet``, same parameters)."""

    depth = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.features(x).permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)


def load_net(net: nn.Module, name: str, device: str) -> nn.Module:
    state = torch.load(weights_dir() / f"{name}.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    if isinstance(net, PNet):
        net.weights_loaded()
    net.requires_grad_(False)  # inference only (and the P-net's out= maxima refuse autograd)
    net = net.eval().to(device).to(memory_format=torch.channels_last)
    if isinstance(net, _CropNet) and device == "cpu" and onednn_available():
        net.use_onednn()
    return net


# ---- resampling from an integral image -----------------------------------------------------


# Pyramid rows resampled at a time: on one thread, few enough that their sums stay in the core's
# cache; on several, more, since each block is a dozen short NumPy calls and the threads
# contend for the GIL between them (2-core machine, a 1080p frame's levels: 16 rows serial
# 18.5 ms, 16 rows on 2 threads 20.5 ms, 64 rows on 2 threads 15.4 ms).
