"""The pipeline's steps by their command-line names, in the order they run (runs.py maps each
to its assets; the command line's modes are sets of them)."""

STEPS = ("register", "detect", "thumbnails", "embed", "match", "cluster", "gallery")
