"""Local processes: the shared base of the multiprocess and sequential backends.

- `settings.LocalSettings`: the pool's size and how tasks are stopped and measured;
- `pool.ResourcePool`: cores (fractions allowed), memory and GPU ids shared out between tasks;
- `distributor.LocalDistributor`: one `jobfleet-worker-node` process per task instance, started
  as soon as its resources are free, killed with everything it started;
- `queue.LocalQueue`: a queue limited by this machine's cores and memory;
- `worker_node.LocalWorkerNode`: reads the ids `LocalDistributor` gives each wrapper.

A backend that runs tasks on this machine subclasses these in a few lines (see the
multiprocess and sequential plugins) instead of importing another plugin.
"""
