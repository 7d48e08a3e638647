"""Settings of the multiprocess backend, and the pool they make."""

import pytest

from jobfleet.core.errors import BackendError, SettingsError
from jobfleet.core.local.settings import gpu_ids
from jobfleet.core.plugins import PluginRegistry
from jobfleet.plugins.multiprocess.distributor import MultiprocessDistributor
from jobfleet.plugins.multiprocess.settings import MultiprocessSettings

GIB = 1024**3


def test_settings_make_the_pool():
    distributor = MultiprocessDistributor(
        "x", settings=MultiprocessSettings(cores=2.5, memory="3G", gpus="0,2")
    )
    assert distributor.pool.total.cores == 2.5
    assert distributor.pool.total.memory == 3 * GIB
    assert distributor.pool.total.gpus == 2


def test_default_pool_is_the_machine(monkeypatch):
    import psutil

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    distributor = MultiprocessDistributor("x")
    assert distributor.pool.total.cores == psutil.cpu_count()
    assert distributor.pool.total.memory == psutil.virtual_memory().total
    assert distributor.pool.total.gpus == 0


def test_default_gpus_come_from_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    assert MultiprocessDistributor("x").pool.total.gpus == 2


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("JOBFLEET_MULTIPROCESS_CORES", "-1", "cores"),
        ("JOBFLEET_MULTIPROCESS_MEMORY", "16", "has no unit"),
        ("JOBFLEET_MULTIPROCESS_GPUS", "0,0", "lists a device twice"),
        ("JOBFLEET_MULTIPROCESS_GPUS", "0;rm", "is not a device id"),
        ("JOBFLEET_MULTIPROCESS_CGROUP", "sometimes", "auto, always or never"),
        ("JOBFLEET_MULTIPROCESS_KILL_GRACE", "-2", "kill_grace"),
    ],
)
def test_bad_settings_are_refused_with_the_field(variable, value, message):
    plugin = PluginRegistry(environ={}).get_cluster("multiprocess")
    with pytest.raises(SettingsError, match=message):
        plugin.settings(environ={variable: value})


def test_gpu_ids_accept_uuids():
    assert gpu_ids("GPU-8f3a-11, 2") == ("GPU-8f3a-11", "2")


def test_submission_without_a_host_channel_is_refused(monkeypatch):
    monkeypatch.delenv("JOBFLEET_HOST_URL", raising=False)
    distributor = MultiprocessDistributor("x")
    distributor.start()
    try:
        with pytest.raises(BackendError, match="no host channel"):
            distributor.submit_to_batch_distributor("job --task-instance-id 1", "t", {})
    finally:
        distributor.stop()


@pytest.mark.parametrize(("value", "expected"), [("false", False), ("0", False), ("yes", True)])
def test_slot_workers_are_on_by_default_and_can_be_turned_off(value, expected):
    plugin = PluginRegistry(environ={}).get_cluster("multiprocess")
    assert plugin.settings(environ={}).slot_workers is True
    chosen = plugin.settings(environ={"JOBFLEET_MULTIPROCESS_SLOT_WORKERS": value})
    assert chosen.slot_workers is expected


def test_a_bad_slot_workers_value_is_refused_with_the_field():
    plugin = PluginRegistry(environ={}).get_cluster("multiprocess")
    with pytest.raises(SettingsError, match="slot_workers"):
        plugin.settings(environ={"JOBFLEET_MULTIPROCESS_SLOT_WORKERS": "sometimes"})
