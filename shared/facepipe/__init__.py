"""facepipe: serverless face detection and recognition (MTCNN + InceptionResnetV1)."""

from facepipe.torch_runtime import limit_openmp_spin

__version__ = "0.1.0"

# Before anything imports torch: see limit_openmp_spin (a process's own setting wins).
limit_openmp_spin()
