"""The command line that wires the program together (``livecanvas``: serve, send, demo, captions,
deploy, models, train): the composition root, above ``stream``, ``engine`` and ``clients``, which
it alone may import all of; nothing imports it."""
