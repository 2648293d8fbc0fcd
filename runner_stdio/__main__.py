"""`python -m runner_stdio` is the same as the `iac-runner` console script."""

import sys

from runner_stdio.cli import main

sys.exit(main())
