"""MTCNN face detection, facenet-pytorch's networks and weights on a faster path.

facenet-pytorch's ``detect_face`` spends most of a large frame's time outside its networks:
every pyramid level and every candidate box is resampled with its own
``interpolate(mode="area")`` call (hundreds per frame), candidate crops are cut one by one in a
Python loop, and the 2×2 max-pool of the P-net runs torch's generic pooling kernel on the
largest feature maps. Importing it also imports torchvision (and with it ``torch._dynamo``,
1.2 s of cold start) for one NMS call.

:class:`~facepipe.vision.mtcnn.detect.Mtcnn` runs the same algorithm step for step (same scales,
thresholds, NMS order and box arithmetic) with that glue replaced:

- one integral image per frame (exact integer sums) serves every pyramid level and every R-/O-net
  crop: an area-resampled pixel is a window sum divided by its height, then its width, which is
  exactly what torch's adaptive average pooling computes, so the inputs are bit-identical; the
  levels are computed a few rows at a time, from sums to normalised input, in cache;
- all candidate crops of a stage are gathered in one vectorised step;
- the P-net's PReLUs run row by row over channels-last memory with the slopes tiled, and its
  2×2/stride-2 ceil-mode max-pool is two element-wise maxima of strided views (same values,
  2–3× faster than torch's channels-last kernels on 10–32 channels);
- NMS is a greedy pass in NumPy over blocks of the overlap matrix (torchvision's rule: suppress
  IoU > threshold, stable descending score order), so torchvision is never imported.

The networks are facenet-pytorch's P-, R- and O-net architectures (the same layer names, so its
``data/{p,r,o}net.pt`` load unchanged) in :mod:`~facepipe.vision.mtcnn.nets`; a unit
test checks them against facenet-pytorch's own modules output for output, and the benchmark
(``make bench``) reports box IoU and embedding cosine against plain facenet-pytorch.

The modules, in the order a frame meets them: :mod:`~facepipe.vision.mtcnn.resample` (the integral
image), :mod:`~facepipe.vision.mtcnn.nets`, :mod:`~facepipe.vision.mtcnn.boxes` (facenet-pytorch's
``generateBoundingBox``, ``rerec``, ``pad``, ``bbreg`` and NMS), then
:mod:`~facepipe.vision.mtcnn.detect`.
"""
