"""``python -m flowopt.cli``: same as the ``flowopt`` script."""

from flowopt.cli import main

main()
