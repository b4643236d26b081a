#!/usr/bin/env python
"""Run one scenario: ``python run_scenario.py SCENARIO.yaml [--set KEY=VALUE ...] [--out DIR]``,
or go on with an interrupted one: ``python run_scenario.py --resume RUN_DIR``.

A thin shim over ``nmoe-sim run``; the run directory's path is the last line of stdout.
"""

import sys

from nmoe_sim.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
