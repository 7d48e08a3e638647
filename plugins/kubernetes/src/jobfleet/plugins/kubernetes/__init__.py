"""jobfleet backend for Kubernetes (being built; not registered as a plugin yet)."""
