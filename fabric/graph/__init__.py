"""The DAG of one tenant's pipelines and transformations, and dbt-style selection."""
