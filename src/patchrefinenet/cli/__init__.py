"""Implementations of the command-line scripts. Each module exposes ``main(script_file, argv=None)``
(per-dataset scripts) or ``main(argv=None)`` (top-level commands)."""
