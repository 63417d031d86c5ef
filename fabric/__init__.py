"""fabric: GitOps for multi-tenant ETL."""
