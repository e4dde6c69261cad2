"""`python -m successor`: the CLI."""
from ._cli import main

main()
