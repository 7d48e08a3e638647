from pathlib import Path

from jobfleet.core.local.ended import Ended, EndedRecords


def test_records_come_back_as_they_were_added_in_any_order():
    records = EndedRecords()
    worker_log = Path("/work/slot-1.worker.log")
    records.add(3, killed=False, returncode=-9, oom_kills_at_start=7, log=worker_log)
    records.add(1, killed=True, returncode=None, oom_kills_at_start=None, log=None)
    records.add(5, killed=False, returncode=0, oom_kills_at_start=0, log=worker_log)
    assert records.get(3) == Ended(False, -9, 7, worker_log)
    assert records.get(1) == Ended(True, None, None, None)
    assert records.get(5) == Ended(False, 0, 0, worker_log)
    assert records.get(2) is None  # not ended (yet)
    assert records.get(4) is None
    assert records.get(0) is None
    assert records.get(6) is None  # never handed out


def test_a_finished_instance_without_returncode_counts_as_killed():
    records = EndedRecords()
    records.add(1, killed=False, returncode=None, oom_kills_at_start=None, log=None)
    assert records.get(1) == Ended(True, None, None, None)
