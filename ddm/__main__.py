"""`python -m ddm ...` is the `ddm` command (the pipeline calls it this way, with the
interpreter that runs Snakemake, so no activated environment is needed)."""

import sys

from ddm.cli import main

sys.exit(main())
