"""``python -m core``: the engine's command line."""

import signal
import sys

from .cli import main
from .stopping import STOP_SIGNALS

code = main()
# The work is done and its outcome reported: a stop signal during the interpreter's shutdown
# (torch's teardown takes a while) changes nothing, so it must not turn a finished run into a
# killed one.
for stop_signal in STOP_SIGNALS:
    signal.signal(stop_signal, signal.SIG_IGN)
sys.exit(code)
