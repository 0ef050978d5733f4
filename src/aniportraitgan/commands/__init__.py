"""The command modules of `aniportraitgan <command>` (see cli.py).

Importing this package sets the OpenMP wait policy to PASSIVE unless the environment already
chose one. It must happen before torch is imported (libgomp reads it once, when it loads), and
every command module imports torch, so this package -- imported by cli.py and by
``python -m aniportraitgan`` before any command module -- is the one place early enough.
Why: with the default (spinning) policy, torch's idle OpenMP threads busy-wait for work; on a
shared or oversubscribed CPU they steal the cores the working threads need and a command runs
3-17x slower (measured on a 2-core machine under load: docs/benchmarks.md "Threads"). Passive
threads sleep instead, which costs nothing measurable on an idle machine. Set
``OMP_WAIT_POLICY=ACTIVE`` in the environment to get the spinning behaviour back.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
