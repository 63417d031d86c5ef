"""Renderers: documents in, text out. They never decide anything."""
