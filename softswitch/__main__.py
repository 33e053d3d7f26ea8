"""``python -m softswitch`` runs the command line."""

from softswitch.cli import main

main()
