"""facepipe: serverless face detection and recognition (MTCNN + InceptionResnetV1).

Importing the package has no side effect: processes make the one setup call of
:mod:`facepipe.runtime` themselves.
"""

__version__ = "0.1.0"
