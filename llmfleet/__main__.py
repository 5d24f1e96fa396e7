"""`python -m llmfleet ...`: the same commands as the `llmfleet` script."""
import sys

from llmfleet.entrypoints.cli import main

sys.exit(main())
