"""`python -m sfdc_emulator …` — see `sfdc_emulator.cli`."""

import sys

from sfdc_emulator.cli import main

sys.exit(main())
