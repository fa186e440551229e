"""`roost deploy`: the operator-side orchestrator (see docs/deploy.md)."""
