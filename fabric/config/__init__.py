"""The config language: YAML format v1 loaded into an immutable desired state, with diagnostics."""
