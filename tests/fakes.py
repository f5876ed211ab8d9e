"""Test stand-ins that several test modules share."""

from __future__ import annotations

from pathlib import Path

import torch
from facenet_pytorch import InceptionResnetV1


def save_published_style_weights(path: Path, seed: int) -> torch.nn.Module:
    """Write seeded InceptionResnetV1 weights shaped like facenet-pytorch's published VGGFace2
    file (with its 8631-class logits head) and return the model they came from."""
    torch.manual_seed(seed)
    model = InceptionResnetV1(pretrained=None).eval()
    state = model.state_dict()
    state["logits.weight"] = torch.zeros(8631, 512)
    state["logits.bias"] = torch.zeros(8631)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return model
