"""The core: cache manager, policies, memory probe, settings, catalog, chat engine, store.

Plain Python that never imports Textual (enforced by an import-linter contract and a test), so
the app, the HTTP server, tests and benchmarks all drive the same code.
"""
