"""The control plane's storage: PostgreSQL engines, the embedded server, tables and writes.

The only package (with the runner's node adapters) that talks to a database. Modules are
imported directly (`from fabric.state.engine import make_engine`); this file re-exports nothing,
so importing one part never drags in the others.
"""
