"""The client users drive a stack with (``facepipe send | poll | get``).

* ``sources``: image files, folders, globs and videos → frames with readable request_ids.
* ``http``: POSTs frames to the Function URL (concurrency, retries, SigV4 for AWS).
* ``fit``: a frame too large for one request body, as a JPEG downscaled just enough.
* ``results``: takes this client's own results off the response queue, leaving others' alone.
* ``annotate``: draws the faces of a result on its image.
* ``stack``: where to send and poll: explicit URLs, the local stack's info line, or a deployed
  stack's Outputs.
"""
