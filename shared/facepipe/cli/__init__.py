"""The ``facepipe`` console script: one module per command (``<name>_cmd.py``)."""
