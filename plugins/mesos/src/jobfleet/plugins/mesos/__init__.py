"""jobfleet backend for Apache Mesos (being built; not registered as a plugin yet)."""
