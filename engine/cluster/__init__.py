"""Serving past one machine on Ray Serve: the translator and the recogniser as deployments whose
replicas many front ends share.

* :mod:`engine.cluster.spec` parses ``ray:<app>[@<address>]`` model specs (no Ray import);
* :mod:`engine.cluster.replicas` holds the deployments' classes: each replica runs one engine worker
  (or one ASR worker) on one model thread, so the window jobs of every front end routed to it share
  its step batches;
* :mod:`engine.cluster.frontend` gives a front end ``EngineWorker``'s and ``AsrWorker``'s interfaces
  over deployment handles, with retries on another replica when one dies;
* :mod:`engine.cluster.deploy` builds and runs the Serve applications (``livecanvas deploy``).

Ray is an optional dependency (``livecanvas[cluster]``); nothing else in livecanvas imports it.
"""
