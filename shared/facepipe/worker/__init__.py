"""Worker mode (``facepipe worker``): the pipeline's queues consumed by long-running processes
(EC2/ECS, GPU or CPU) instead of Lambda, with Lambda's batch semantics.

* :mod:`facepipe.stages.batch`: what a batch becomes (the functions' own services build it);
* :mod:`facepipe.worker.consumer`: one queue: long polling, batching, visibility, shutdown;
* :mod:`facepipe.worker.health`: ``GET /healthz``;
* :mod:`facepipe.worker.runner`: the process: a thread per stage, ticker, heartbeat.
"""
