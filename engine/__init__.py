"""The engine package: models and decoding (never imports ``stream``).

Importing it first sets the OpenMP wait policy to passive (unless the environment already chooses
one), before torch loads its OpenMP runtime: idle torch threads then sleep instead of spinning. On a
small CPU shared with the speech recogniser, the event loop and other processes, spinning threads
steal the cores the working ones need, and a 32-canvas step slowed from about 0.9 s to 6-7 s under
such load (bench/README.md, "Thread settings").
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
