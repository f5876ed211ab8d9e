"""The pipeline's stages (detect, ingest, recognize), the result ledger and the one queue batch
abstraction, free of AWS: their adapters come from :mod:`facepipe.app.wiring`."""
