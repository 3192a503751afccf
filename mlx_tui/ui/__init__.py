"""The Textual app: one screen with a memory gauge, the cached-models table and a chat.

Everything here only renders what :mod:`mlx_tui.core` reports; loads, evictions and
generations run in the cache's threads or in thread workers, never on the event loop.
"""
