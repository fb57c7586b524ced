"""`python -m api.cli` is `pm-ops` (serve starts its projections process this way)."""

from api.cli import main

main()
