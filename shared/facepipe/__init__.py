"""facepipe: serverless face detection and recognition (MTCNN + InceptionResnetV1)."""

__version__ = "0.1.0"
