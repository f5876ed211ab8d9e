"""What a process builds from its settings (:mod:`~facepipe.app.wiring`), and the use cases run
in one process: the pipeline, enrolment, evaluation, the demo, album indexing."""
