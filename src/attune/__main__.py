"""`python -m attune ...` (what `torchrun -m attune train ...` runs)."""

from attune.cli import main

main()
