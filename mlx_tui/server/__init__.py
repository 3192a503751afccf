"""The HTTP API: the same :class:`~mlx_tui.core.cache.ModelCache` over HTTP.

``app`` holds the Starlette routes, ``openai`` the OpenAI-compatible shapes, ``bodies`` and
``errors`` how requests are read and failures answered, ``documents`` the JSON that ``GET /``
and ``mlx-tui status`` share, ``streaming`` the bridge from a generating thread to the event
loop, and ``serve`` runs it all with uvicorn (inside the app, or headless with
``mlx-tui serve``). Nothing is imported here, so ``mlx-tui status`` can read ``documents``
without loading the server stack.
"""
