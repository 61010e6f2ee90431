"""``python -m multitask.synth --out DIR ...``: the ``multitask synth`` command on its own."""

from .cli import main

main()
