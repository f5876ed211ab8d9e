"""Pixels in, faces out: frame decoding and its limits, MTCNN, the detector and its crops, the
memory budget; no identities."""
