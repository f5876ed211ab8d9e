"""The two pipeline stages, free of AWS glue."""
