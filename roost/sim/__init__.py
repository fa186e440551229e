"""A deterministic swarm simulator that runs roost's own core (see docs/sim.md)."""
