"""Running the DAG: node values, executors, and the dlt/dbt node adapters."""
