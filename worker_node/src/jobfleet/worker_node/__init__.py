"""The jobfleet worker-node wrapper (built in its own issue)."""
