"""Other mlx-tui instances, seen and driven from this one through their HTTP API.

* :mod:`.address`: where a remote answers and its key (``[[remotes]]``, ``--remote``).
* :mod:`.client`: the requests (``/health``, load, evict, pin, clean-up, chat), with timeouts.
* :mod:`.documents`: ``/health`` read back into the core's ModelView and MemorySnapshot.
* :mod:`.poller`: one thread per host polling ``/health``, with backoff while it is down.
* :mod:`.cache`, :mod:`.chat`, :mod:`.host`: a remote as the app reads a local Runtime.
* :mod:`.permissions`: a settings file with keys that others can read.

Imports the core and httpx, never the UI or the server (import-linter contracts in
pyproject.toml); blocking calls belong in worker threads.
"""
