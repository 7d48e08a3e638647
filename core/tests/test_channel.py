import json
import math
import os
import subprocess
import sys
import threading

import pytest

import jobfleet.core.channel as channel_package
from jobfleet.core.channel import (
    PROTOCOL_VERSION,
    Channel,
    ChannelError,
    Event,
    EventCursor,
    EventKind,
    FileChannel,
    FinalReport,
    HeartbeatReport,
    ProtocolVersionError,
    RunningReport,
    TaskSpec,
    UsageReport,
    new_writer_token,
    open_channel,
    register_transport,
    transport_schemes,
)
from jobfleet.core.exit_info import ErrorState, ExitReason, ExitRecord


@pytest.fixture
def transport():
    """The transport the `channel` fixture serves: tests marked BOTH run for each."""
    return "file"


class SplitChannel(Channel):
    """An http channel as host and wrappers use it together: the host's calls go to its file
    channel, the wrappers' (specs, array steps, writers) through the HTTP server in front."""

    def __init__(self, host, worker):
        self.host, self.worker = host, worker
        self.root = host.root

    url = property(lambda self: self.worker.url)

    def put_spec(self, spec):
        self.host.put_spec(spec)

    def put_array(self, array_id, batch_number, steps):
        self.host.put_array(array_id, batch_number, steps)

    def put_array_specs(self, array_id, batch_number, specs):
        self.host.put_array_specs(array_id, batch_number, specs)

    def read_events(self, cursor=None):
        return self.host.read_events(cursor)

    def remove(self, task_instance_id):
        self.host.remove(task_instance_id)

    def remove_spec(self, task_instance_id):
        self.host.remove_spec(task_instance_id)

    def remove_array(self, array_id, batch_number):
        self.host.remove_array(array_id, batch_number)

    def get_spec(self, task_instance_id):
        return self.worker.get_spec(task_instance_id)

    def resolve_array_step(self, array_id, batch_number, step):
        return self.worker.resolve_array_step(array_id, batch_number, step)

    def get_array_step(self, array_id, batch_number, step):
        return self.worker.get_array_step(array_id, batch_number, step)

    def open_writer(self, task_instance_id):
        return self.worker.open_writer(task_instance_id)

    def close(self):
        self.worker.close()


@pytest.fixture
def channel(tmp_path, transport, monkeypatch):
    host = FileChannel.create(tmp_path / "channel")
    if transport == "file":
        yield host
        return
    from jobfleet.core.host.channel_server import serve_channel

    served = serve_channel(host, "test")
    monkeypatch.setenv("JOBFLEET_CHANNEL_TOKEN", served.token)
    monkeypatch.setenv("JOBFLEET_CHANNEL_RETRY_SECONDS", "5")
    split = SplitChannel(host, open_channel(served.url))
    try:
        yield split
    finally:
        split.close()
        served.close()


BOTH = pytest.mark.parametrize("transport", ["file", "http"])
"""The channel contract, run for the file transport and for the http one."""


def full_spec(**changes):
    fields = {
        "task_instance_id": 12,
        "command": "echo 'hi' && exit 3",
        "name": "a/strange $(name)",
        "run_id": 4,
        "stdout_dir": "/logs/out",
        "stderr_dir": None,
        "environment": {"OMP_NUM_THREADS": "2", "EMPTY": ""},
        "memory": 4 * 1024**3,
        "runtime": 3600,
        "cores": 2,
        "heartbeat_interval": 5,
    }
    fields.update(changes)
    return TaskSpec(**fields)


# Task specs.


def test_spec_round_trips_through_json():
    spec = full_spec()
    again = TaskSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert again.cores == 2.0
    assert isinstance(again.cores, float)
    assert again.heartbeat_interval == 5.0
    assert again.protocol_version == PROTOCOL_VERSION


def test_spec_defaults_and_minimal_dict():
    spec = TaskSpec.from_dict(
        {
            "protocol_version": PROTOCOL_VERSION,
            "task_instance_id": 1,
            "command": "true",
            "name": "t",
        }
    )
    assert spec == TaskSpec(1, "true", "t")
    assert spec.stdout_dir is None
    assert spec.stderr_dir is None
    assert dict(spec.environment) == {}
    assert spec.memory is None
    assert spec.heartbeat_interval == 30.0


def test_spec_ignores_unknown_keys():
    data = full_spec().to_dict() | {"added_in_a_later_release": [1, 2]}
    assert TaskSpec.from_dict(data) == full_spec()


def test_spec_environment_is_a_frozen_copy():
    environment = {"A": "1"}
    spec = full_spec(environment=environment)
    environment["A"] = "changed"
    assert spec.environment["A"] == "1"
    with pytest.raises(TypeError):
        spec.environment["B"] = "2"
    assert hash(spec) == hash(full_spec(environment={"A": "1"}))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("task_instance_id", "12"),
        ("task_instance_id", True),
        ("task_instance_id", -1),
        ("task_instance_id", 1.0),
        ("command", ["echo", "hi"]),
        ("name", None),
        ("run_id", "4"),
        ("stdout_dir", 3),
        ("stderr_dir", False),
        ("environment", [["A", "1"]]),
        ("environment", {"A": 1}),
        ("memory", "4G"),
        ("memory", 0),
        ("memory", 1.5),
        ("runtime", -5),
        ("cores", "2"),
        ("cores", 0),
        ("cores", True),
        ("heartbeat_interval", None),
        ("heartbeat_interval", 0),
        ("heartbeat_interval", math.inf),
        ("protocol_version", "1"),
    ],
)
def test_spec_type_errors_name_the_field(field, value):
    data = full_spec().to_dict() | {field: value}
    with pytest.raises(ChannelError, match=repr(field)):
        TaskSpec.from_dict(data)


@pytest.mark.parametrize("field", ["protocol_version", "task_instance_id", "command", "name"])
def test_spec_missing_required_field_is_named(field):
    data = full_spec().to_dict()
    del data[field]
    with pytest.raises(ChannelError, match=repr(field)):
        TaskSpec.from_dict(data)


def test_spec_that_is_not_an_object_is_refused():
    with pytest.raises(ChannelError, match="JSON object"):
        TaskSpec.from_dict([1, 2])


def test_spec_of_another_protocol_version_is_refused():
    data = full_spec().to_dict() | {"protocol_version": PROTOCOL_VERSION + 1, "command": 5}
    with pytest.raises(ProtocolVersionError) as caught:
        TaskSpec.from_dict(data)
    message = str(caught.value)
    assert f"version {PROTOCOL_VERSION + 1}" in message
    assert f"version {PROTOCOL_VERSION}." in message


def test_constructing_a_bad_spec_fails_on_the_host():
    with pytest.raises(ChannelError, match="'memory'"):
        TaskSpec(1, "true", "t", memory="4G")


# Events.


def test_event_line_round_trip():
    data = {"error_state": "D", "text": "a\nb\u00e9\udcff"}
    event = Event(EventKind.FINAL, 3, "w-1", 7, 1700000000.25, data)
    line = event.to_line()
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert b" " not in line
    assert Event.from_line(line) == event


def test_event_with_data_that_is_not_json_is_refused():
    event = Event(EventKind.HEARTBEAT, 3, "w", 0, 0.0, {"rss": math.nan})
    with pytest.raises(ChannelError, match="not JSON-ready"):
        event.to_line()
    event = Event(EventKind.HEARTBEAT, 3, "w", 0, 0.0, {"what": object()})
    with pytest.raises(ChannelError, match="not JSON-ready"):
        event.to_line()


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        (b"nonsense", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1]", "JSON object"),
        (b'{"kind":"final","task_instance_id":1,"writer":"w","sequence":0}', "'time'"),
        (b'{"kind":"exploded","task_instance_id":1,"writer":"w","sequence":0,"time":1}', "kind"),
        (b'{"kind":"final","task_instance_id":"1","writer":"w","sequence":0,"time":1}', "task"),
        (b'{"kind":"final","task_instance_id":1,"writer":"w","sequence":0,"time":"x"}', "'time'"),
        (
            b'{"kind":"final","task_instance_id":1,"writer":"w","sequence":0,"time":1,"data":[]}',
            "'data'",
        ),
    ],
)
def test_garbage_event_lines_raise_channel_error(line, complaint):
    with pytest.raises(ChannelError, match=complaint):
        Event.from_line(line)


def test_event_kinds():
    assert [kind.value for kind in EventKind] == ["running", "heartbeat", "final"]


# Typed reports.

FULL_FINAL = FinalReport(
    error_state=ErrorState.RESOURCE_ERROR,
    message="oom: killed by SIGKILL",
    exit=ExitRecord(ExitReason.OOM, signal=9, raw_state="signal SIGKILL", message="oom"),
    usage=UsageReport(maxrss=5 * 1024**2, cpu=1.5, wallclock=2.25, usage_str='{"metric":"pss"}'),
    stdout_tail="out\n",
    stderr_tail="err\n",
    stdout_path="/logs/t.stdout.7",
    stderr_path=None,
    distributor_id="7",
    hostname="node1",
)
FULL_RUNNING = RunningReport("node1", 100, 99, "7", "/logs/t.stdout.7", None)

# The keys the wrapper has always written: the typed reports keep the wire form.
WIRE_KEYS = {
    EventKind.RUNNING: {
        "hostname",
        "pid",
        "wrapper_pid",
        "distributor_id",
        "stdout_path",
        "stderr_path",
    },
    EventKind.HEARTBEAT: {"rss"},
    EventKind.FINAL: {
        "error_state",
        "message",
        "exit",
        "usage",
        "stdout_tail",
        "stderr_tail",
        "stdout_path",
        "stderr_path",
        "distributor_id",
        "hostname",
    },
}


@pytest.mark.parametrize("report", [FULL_RUNNING, HeartbeatReport(rss=4096), FULL_FINAL])
@BOTH
def test_reports_travel_in_the_wire_form_and_come_back_typed(channel, report):
    with channel.open_writer(5) as writer:
        sent = writer.send_report(report, durable=True)
    [event] = channel.read_events()[0]
    assert event == sent
    assert event.kind is report.kind
    assert event.report == report
    assert set(event.data) == WIRE_KEYS[report.kind]
    assert json.loads(event.to_line())["data"] == report.to_dict()


def test_a_final_report_of_the_current_wire_form_reads_typed():
    data = {
        "error_state": "Z",
        "message": "oom: killed by SIGKILL",
        "exit": {**FULL_FINAL.exit.to_dict(), "added_later": True},
        "usage": {**FULL_FINAL.usage.to_dict(), "maxpss": 4 * 1024**2},
        "stdout_tail": "out\n",
        "stderr_tail": "err\n",
        "stdout_path": "/logs/t.stdout.7",
        "stderr_path": None,
        "distributor_id": 7,  # some backends number their jobs
        "hostname": "node1",
        "a_field_of_a_later_release": {"x": 1},
    }
    line = Event(EventKind.FINAL, 5, "w", 3, 1.0, data).to_line()
    report = Event.from_line(line).report
    assert report == FULL_FINAL
    assert report.distributor_id == "7"
    assert Event.from_line(line).data == data  # the raw form stays as it travelled


def test_reports_of_older_writers_with_fewer_fields_are_read():
    assert FinalReport.from_dict({"error_state": "D"}) == FinalReport(ErrorState.DONE)
    assert FinalReport.from_dict({"error_state": "U", "message": None}).message == ""
    assert RunningReport.from_dict({}) == RunningReport()
    assert HeartbeatReport.from_dict({"rss": None}) == HeartbeatReport()
    usage = FinalReport.from_dict({"error_state": "D", "usage": {"maxrss": 1e6}}).usage
    assert usage == UsageReport(maxrss=1_000_000)


# Each malformed report, and the field its problem must name.
MALFORMED_REPORTS = [
    ("running", {"pid": "12"}, "'pid'"),
    ("running", {"wrapper_pid": -1}, "'wrapper_pid'"),
    ("running", {"hostname": 5}, "'hostname'"),
    ("running", {"distributor_id": [1]}, "'distributor_id'"),
    ("running", {"stdout_path": False}, "'stdout_path'"),
    ("heartbeat", {"rss": "big"}, "'rss'"),
    ("heartbeat", {"rss": True}, "'rss'"),
    ("heartbeat", {"rss": -5}, "'rss'"),
    ("final", {}, "no 'error_state'"),
    ("final", {"message": "a report without a verdict"}, "no 'error_state'"),
    ("final", {"error_state": "X"}, "'error_state'"),
    ("final", {"error_state": None}, "'error_state'"),
    ("final", {"error_state": "D", "message": 3}, "'message'"),
    ("final", {"error_state": "D", "stdout_tail": ["a"]}, "'stdout_tail'"),
    ("final", {"error_state": "D", "hostname": 1.5}, "'hostname'"),
    ("final", {"error_state": "D", "exit": "exit 1"}, "'exit'"),
    ("final", {"error_state": "D", "exit": {"exit_code": 1}}, "no 'reason'"),
    ("final", {"error_state": "D", "exit": {"reason": "exploded"}}, "'reason'"),
    ("final", {"error_state": "E", "exit": {"reason": "failed", "exit_code": "1"}}, "'exit_code'"),
    ("final", {"error_state": "E", "exit": {"reason": "failed", "signal": -9}}, "'signal'"),
    (
        "final",
        {"error_state": "E", "exit": {"reason": "failed", "core_dumped": 1}},
        "'core_dumped'",
    ),
    ("final", {"error_state": "D", "usage": []}, "'usage'"),
    ("final", {"error_state": "D", "usage": {"maxrss": "1G"}}, "'maxrss'"),
    ("final", {"error_state": "D", "usage": {"cpu": -1}}, "'cpu'"),
    ("final", {"error_state": "D", "usage": {"wallclock": "long"}}, "'wallclock'"),
    ("final", {"error_state": "D", "usage": {"usage_str": {"a": 1}}}, "'usage_str'"),
    ("paused", {}, "not an event kind"),
]


@pytest.mark.parametrize(
    ("kind", "data", "field_named"),
    MALFORMED_REPORTS,
    ids=[f"{kind}-{n}" for n, (kind, _, _) in enumerate(MALFORMED_REPORTS)],
)
@BOTH
def test_a_malformed_report_is_a_problem_on_the_cursor_and_skipped(
    channel, kind, data, field_named
):
    writer = channel.open_writer(5)
    first = writer.send_report(FULL_RUNNING)
    record = {
        "kind": kind,
        "task_instance_id": 5,
        "writer": writer.writer,
        "sequence": 99,
        "time": 1.0,
        "data": data,
    }
    with open(events_path(channel, writer), "ab") as stream:
        stream.write(json.dumps(record).encode() + b"\n")
    last = writer.send_report(FULL_FINAL, durable=True)
    events, cursor = channel.read_events()
    assert events == [first, last]
    assert [e.report for e in events] == [FULL_RUNNING, FULL_FINAL]
    [problem] = cursor.problems
    assert problem.startswith("Skipped the record at byte")
    assert field_named in problem
    assert channel.read_events(cursor) == ([], cursor.replace(problems=()))


@pytest.mark.parametrize(("kind", "data", "field_named"), MALFORMED_REPORTS[:-1])
@BOTH
def test_a_writer_refuses_a_malformed_report_without_using_a_number(
    channel, kind, data, field_named
):
    writer = channel.open_writer(5)
    with pytest.raises(ChannelError, match=field_named):
        writer.send(kind, data)
    with pytest.raises(ChannelError, match=field_named):
        Event(EventKind(kind), 5, "w", 0, 1.0, data).report  # noqa: B018 - read to check
    assert writer.send_report(HeartbeatReport()).sequence == 0


@pytest.mark.parametrize(
    ("build", "field_named"),
    [
        (lambda: RunningReport(pid=-1), "'pid'"),
        (lambda: HeartbeatReport(rss=1.5), "'rss'"),
        (lambda: FinalReport("done"), "'error_state'"),
        (lambda: FinalReport("D", exit={"reason": "nope"}), "'reason'"),
        (lambda: UsageReport(cpu=math.nan), "'cpu'"),
        (lambda: UsageReport(maxrss=math.inf), "'maxrss'"),
    ],
)
def test_reports_are_checked_when_built(build, field_named):
    with pytest.raises(ChannelError, match=field_named):
        build()


def test_reports_normalise_what_json_readers_hand_over():
    report = FinalReport("D", exit={"reason": "completed", "exit_code": 0}, usage={"cpu": 1})
    assert report.error_state is ErrorState.DONE
    assert report.exit == ExitRecord(ExitReason.COMPLETED, exit_code=0)
    assert report.usage == UsageReport(cpu=1.0)
    assert isinstance(report.usage.cpu, float)


# Opening channels.


def test_open_channel_accepts_file_urls_and_absolute_paths(tmp_path):
    created = open_channel((tmp_path / "c").as_uri(), create=True)
    assert isinstance(created, FileChannel)
    assert created.url == (tmp_path / "c").as_uri()
    assert open_channel(str(tmp_path / "c")).url == created.url
    assert open_channel(f"file://localhost{tmp_path / 'c'}").url == created.url
    assert open_channel(created.url).url == created.url


def test_open_channel_decodes_percent_escapes(tmp_path):
    root = tmp_path / "with space"
    created = FileChannel.create(root)
    assert "%20" in created.url
    assert open_channel(created.url).root == str(root)


@pytest.mark.parametrize(
    "url",
    ["relative/dir", "file:relative/dir", "file://relative/dir", "file:///tmp/x?a=1", "./x"],
)
def test_relative_or_odd_file_urls_are_refused(url):
    with pytest.raises(ChannelError, match=r"absolute|query|scheme"):
        open_channel(url, create=True)


def test_unknown_scheme_names_the_accepted_ones():
    with pytest.raises(ChannelError, match="'ftp'") as caught:
        open_channel("ftp://example.org/dir")
    assert "file:" in str(caught.value)


def test_missing_root_is_a_channel_error(tmp_path):
    with pytest.raises(ChannelError, match="does not exist"):
        open_channel((tmp_path / "missing").as_uri())


def test_directory_without_channel_json_is_refused(tmp_path):
    with pytest.raises(ChannelError, match=r"channel\.json"):
        FileChannel(tmp_path)


def test_channel_of_another_protocol_version_is_refused(tmp_path):
    FileChannel.create(tmp_path)
    (tmp_path / "channel.json").write_text(json.dumps({"protocol": PROTOCOL_VERSION + 1}))
    with pytest.raises(ProtocolVersionError) as caught:
        open_channel(tmp_path.as_uri())
    assert f"version {PROTOCOL_VERSION + 1}" in str(caught.value)
    assert f"version {PROTOCOL_VERSION}." in str(caught.value)
    # The host does not overwrite it either: old wrappers may still be using it.
    with pytest.raises(ProtocolVersionError):
        FileChannel.create(tmp_path)
    assert json.loads((tmp_path / "channel.json").read_text())["protocol"] == PROTOCOL_VERSION + 1


@pytest.mark.parametrize("content", ["{}", "[1]", '{"protocol": "1"}', "{"])
def test_unreadable_channel_json_is_a_channel_error(tmp_path, content):
    FileChannel.create(tmp_path)
    (tmp_path / "channel.json").write_text(content)
    with pytest.raises(ChannelError, match=r"channel\.json"):
        FileChannel(tmp_path)


def test_create_is_idempotent(tmp_path):
    first = FileChannel.create(tmp_path)
    first.put_spec(full_spec())
    again = FileChannel.create(tmp_path)
    assert again.get_spec(12) == full_spec()
    assert sorted(os.listdir(tmp_path)) == ["arrays", "channel.json", "events", "specs"]


def test_register_transport(monkeypatch, tmp_path):
    monkeypatch.setattr(channel_package, "_TRANSPORTS", dict(channel_package._TRANSPORTS))
    calls = []

    def factory(url, *, create=False):
        calls.append((url, create))
        return FileChannel.create(tmp_path)

    register_transport("Memory", factory)
    assert transport_schemes() == ["file", "http", "https", "memory"]
    assert isinstance(open_channel("memory://x", create=True), FileChannel)
    assert calls == [("memory://x", True)]
    with pytest.raises(ChannelError, match="already registered"):
        register_transport("memory", FileChannel.from_url)
    register_transport("memory", FileChannel.from_url, replace=True)
    with pytest.raises(ChannelError, match="not a valid URL scheme"):
        register_transport("2bad", factory)


# Specs and arrays in a file channel.


@BOTH
def test_put_and_get_spec(channel):
    channel.put_spec(full_spec())
    assert channel.get_spec(12) == full_spec()
    assert os.listdir(os.path.join(channel.root, "specs")) == ["12.json"]


@BOTH
def test_missing_spec_says_which_and_where(channel):
    with pytest.raises(ChannelError, match=r"no spec for task instance 99 in (file|http)://"):
        channel.get_spec(99)


@BOTH
def test_spec_of_another_version_on_disk_is_refused(channel):
    path = os.path.join(channel.root, "specs", "12.json")
    with open(path, "w") as stream:
        json.dump(full_spec().to_dict() | {"protocol_version": 99}, stream)
    with pytest.raises(ProtocolVersionError, match="99"):
        channel.get_spec(12)


@BOTH
def test_corrupt_spec_file_is_a_channel_error(channel):
    with open(os.path.join(channel.root, "specs", "12.json"), "w") as stream:
        stream.write('{"protocol_version": 1, "task_')
    with pytest.raises(ChannelError, match="not valid JSON"):
        channel.get_spec(12)


@pytest.mark.parametrize("bad_id", [-1, True, "12", 1.5])
@BOTH
def test_ids_must_be_non_negative_integers(channel, bad_id):
    with pytest.raises(ChannelError, match="non-negative integer"):
        channel.get_spec(bad_id)
    with pytest.raises(ChannelError, match="non-negative integer"):
        channel.open_writer(bad_id)


@BOTH
def test_spec_rewrites_are_atomic(channel):
    """A reader polling while large specs are rewritten only ever sees whole specs."""
    size = 1_000_000
    versions = [full_spec(environment={"BIG": letter * size}) for letter in "ab"]
    channel.put_spec(versions[0])
    done = threading.Event()
    reads = []
    failures = []

    def reader():
        while not done.is_set():
            try:
                big = channel.get_spec(12).environment["BIG"]
            except Exception as exc:  # any failure is the test's finding
                failures.append(exc)
                return
            if big not in (versions[0].environment["BIG"], versions[1].environment["BIG"]):
                failures.append(AssertionError(f"mixed spec of {len(big)} characters"))
                return
            reads.append(big[0])

    thread = threading.Thread(target=reader)
    thread.start()
    writes = 0
    try:
        while (writes < 40 or len(reads) < 40) and not failures:
            channel.put_spec(versions[writes % 2])
            writes += 1
    finally:
        done.set()
        thread.join()
    assert not failures
    assert set(reads) <= {"a", "b"}
    assert os.listdir(os.path.join(channel.root, "specs")) == ["12.json"]


@BOTH
def test_array_steps_resolve(channel):
    channel.put_array(7, 2, {0: 100, 1: 101, 2: 105})
    assert [channel.resolve_array_step(7, 2, step) for step in range(3)] == [100, 101, 105]
    with pytest.raises(ChannelError, match="has no step 3"):
        channel.resolve_array_step(7, 2, 3)
    with pytest.raises(ChannelError, match="no step map for array 7 batch 3"):
        channel.resolve_array_step(7, 3, 0)
    channel.remove_array(7, 2)
    channel.remove_array(7, 2)  # removing twice is harmless
    with pytest.raises(ChannelError, match="no step map"):
        channel.resolve_array_step(7, 2, 0)


def test_array_map_is_checked(channel):
    with pytest.raises(ChannelError, match="array step"):
        channel.put_array(7, 2, {-1: 100})
    with pytest.raises(ChannelError, match="task instance id"):
        channel.put_array(7, 2, {0: "100"})
    with pytest.raises(ChannelError, match="batch number"):
        channel.put_array(7, -2, {0: 100})


# Events in a file channel.


@BOTH
def test_events_are_read_once_each(channel):
    with channel.open_writer(5) as writer:
        sent = [writer.send(EventKind.RUNNING, {"pid": 1})]
        events, cursor = channel.read_events()
        assert events == sent
        sent.append(writer.send("heartbeat"))
        sent.append(writer.send(EventKind.FINAL, {"error_state": "D"}, durable=True))
    more, cursor = channel.read_events(cursor)
    assert more == sent[1:]
    assert [e.sequence for e in sent] == [0, 1, 2]
    assert {e.writer for e in sent} == {writer.writer}
    assert channel.read_events(cursor)[0] == []
    assert cursor.problems == ()


@BOTH
def test_cursor_survives_json_and_resumes_without_duplicates(channel):
    writer = channel.open_writer(5)
    first = [writer.send("heartbeat", {"n": n}) for n in range(3)]
    events, cursor = channel.read_events()
    assert events == first
    saved = json.dumps(cursor.to_dict())
    resumed = EventCursor.from_dict(json.loads(saved))
    assert resumed == cursor
    assert channel.read_events(resumed)[0] == []
    later = [writer.send("heartbeat", {"n": n}) for n in range(3, 5)]
    assert channel.read_events(resumed)[0] == later
    writer.close()


@pytest.mark.parametrize(
    "saved",
    [
        {},
        {"transport": "file"},
        {"transport": "file", "positions": {"5.w.jsonl": -1}},
        {"transport": "file", "positions": {"5.w.jsonl": "10"}},
        [],
    ],
)
def test_bad_saved_cursors_are_refused(saved):
    with pytest.raises(ChannelError, match="cursor"):
        EventCursor.from_dict(saved)


def test_cursor_of_another_transport_is_refused(channel):
    with pytest.raises(ChannelError, match="'http'"):
        channel.read_events(EventCursor("http", {}))


def events_path(channel, writer):
    return os.path.join(channel.root, "events", f"{writer.task_instance_id}.{writer.writer}.jsonl")


def test_torn_trailing_record_waits_until_complete(channel):
    writer = channel.open_writer(5)
    first = writer.send("running")
    line = Event(EventKind.HEARTBEAT, 5, writer.writer, 1, 1.0, {"rss": 10}).to_line()
    path = events_path(channel, writer)
    with open(path, "ab") as stream:
        stream.write(line[:20])
    events, cursor = channel.read_events()
    assert events == [first]
    assert channel.read_events(cursor)[0] == []
    with open(path, "ab") as stream:
        stream.write(line[20:])
    events, cursor = channel.read_events(cursor)
    assert events == [Event.from_line(line)]
    assert channel.read_events(cursor)[0] == []
    assert cursor.problems == ()


def test_corrupt_complete_line_is_skipped_and_reported_once(channel):
    writer = channel.open_writer(5)
    first = writer.send("running")
    with open(events_path(channel, writer), "ab") as stream:
        stream.write(b'{"kind": "runn\n')
    last = writer.send("heartbeat")
    events, cursor = channel.read_events()
    assert events == [first, last]
    assert len(cursor.problems) == 1
    assert "Skipped the record at byte" in cursor.problems[0]
    events, cursor = channel.read_events(cursor)
    assert events == []
    assert cursor.problems == ()


def test_record_in_the_wrong_file_is_skipped(channel):
    writer = channel.open_writer(5)
    stray = Event(EventKind.FINAL, 6, writer.writer, 0, 1.0, {"error_state": "D"}).to_line()
    with open(events_path(channel, writer), "ab") as stream:
        stream.write(stray)
    events, cursor = channel.read_events()
    assert events == []
    assert "do not match the file name" in cursor.problems[0]


def test_failed_write_does_not_spoil_later_records(channel, monkeypatch):
    writer = channel.open_writer(5)
    first = writer.send("running")
    real_write = os.write

    def half_then_fail(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "write", half_then_fail)
        with pytest.raises(ChannelError, match="No space left"):
            writer.send("heartbeat", {"rss": 1})
    last = writer.send("final", {"error_state": "D"}, durable=True)
    events, cursor = channel.read_events()
    assert events == [first, last]
    assert last.sequence == 2  # the failed send's number is never reused
    assert len(cursor.problems) == 1


@BOTH
def test_closed_writer_refuses_to_send(channel):
    writer = channel.open_writer(5)
    writer.close()
    writer.close()
    with pytest.raises(ChannelError, match="closed"):
        writer.send("heartbeat")


@BOTH
def test_unknown_event_kind_and_bad_data_are_refused_without_using_a_number(channel):
    writer = channel.open_writer(5)
    with pytest.raises(ChannelError, match="Known kinds: running, heartbeat, final"):
        writer.send("exploded")
    with pytest.raises(ChannelError, match="not JSON-ready"):
        writer.send("heartbeat", {"rss": math.inf})
    assert writer.send("running").sequence == 0


@BOTH
def test_writer_tokens_are_unique_and_file_name_safe(channel):
    tokens = {new_writer_token() for _ in range(100)}
    assert len(tokens) == 100
    for token in tokens:
        assert all(c.isascii() and (c.isalnum() or c in "._-") for c in token)
        assert str(os.getpid()) in token
    writer = channel.open_writer(5)
    assert os.path.basename(events_path(channel, writer)).startswith("5.")


@BOTH
def test_threads_sharing_a_writer_never_mix_records(channel):
    """A heartbeat thread and the main thread send through one writer at the same time."""
    per_thread = 500
    writer = channel.open_writer(5)
    start = threading.Barrier(2)

    def send_all(kind):
        start.wait()
        for n in range(per_thread):
            writer.send(kind, {"n": n, "pad": "p" * (n % 7) * 1000})

    heartbeat = threading.Thread(target=send_all, args=("heartbeat",))
    heartbeat.start()
    send_all("running")
    heartbeat.join()
    events, cursor = channel.read_events()
    assert cursor.problems == ()
    # File order is sequence order, so numbering and writing happened as one step.
    assert [e.sequence for e in events] == list(range(2 * per_thread))
    for kind in ("heartbeat", "running"):
        assert [e.data["n"] for e in events if e.kind == kind] == list(range(per_thread))


@BOTH
def test_events_come_back_in_file_name_then_sequence_order(channel):
    writers = [channel.open_writer(tid) for tid in (30, 4, 4)]
    for n in range(3):
        for writer in writers:
            writer.send("heartbeat", {"n": n})
    events, _ = channel.read_events()
    keys = [(f"{e.task_instance_id}.{e.writer}.jsonl", e.sequence) for e in events]
    assert keys == sorted(keys)
    assert len(events) == 9


@BOTH
def test_remove_deletes_spec_and_events_of_one_instance(channel):
    channel.put_spec(full_spec(task_instance_id=1))
    channel.put_spec(full_spec(task_instance_id=11))
    gone = [channel.open_writer(1), channel.open_writer(1)]
    kept = channel.open_writer(11)
    for writer in [*gone, kept]:
        writer.send("final", {"error_state": "D"}, durable=True)
    events, cursor = channel.read_events()
    assert len(events) == 3
    channel.remove(1)
    channel.remove(1)  # removing twice is harmless
    channel.remove(12345)  # so is removing an unknown instance
    with pytest.raises(ChannelError, match="no spec for task instance 1 "):
        channel.get_spec(1)
    assert channel.get_spec(11).task_instance_id == 11
    assert os.listdir(os.path.join(channel.root, "events")) == [
        os.path.basename(events_path(channel, kept))
    ]
    more = kept.send("heartbeat")
    events, cursor = channel.read_events(cursor)
    assert events == [more]
    assert list(cursor.positions) == [os.path.basename(events_path(channel, kept))]


def test_forget_events_drops_ended_instances_from_the_directory_and_the_cursor(channel):
    ended = [channel.open_writer(1), channel.open_writer(1), channel.open_writer(3)]
    live = channel.open_writer(11)  # 11 starts with "1.": only whole ids match
    for writer in [*ended, live]:
        writer.send("running", {"pid": 1})
    events, cursor = channel.read_events()
    assert len(events) == 4
    assert len(cursor.positions) == 4
    channel.forget_events([1, 3])
    channel.forget_events([1, 3, 12345])  # twice, and an unknown id: harmless
    channel.forget_events([])
    live_name = os.path.basename(events_path(channel, live))
    assert os.listdir(os.path.join(channel.root, "events")) == [live_name]
    events, cursor = channel.read_events(cursor)
    assert events == []
    assert list(cursor.positions) == [live_name]
    # A writer opened later for a forgotten instance still reports.
    late = channel.open_writer(1)
    sent = late.send("heartbeat")
    events, cursor = channel.read_events(cursor)
    assert events == [sent]


def test_other_files_in_events_are_ignored(channel):
    events_dir = os.path.join(channel.root, "events")
    for name in ["README", ".5.w.jsonl.swp", "x.w.jsonl", "5..jsonl", "5.w.json"]:
        with open(os.path.join(events_dir, name), "w") as stream:
            stream.write("junk\n")
    events, cursor = channel.read_events()
    assert events == []
    assert cursor.problems == ()
    assert dict(cursor.positions) == {}


WRITER_SCRIPT = """
import sys
from jobfleet.core.channel import open_channel

url, task_instance_id, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open_channel(url).open_writer(task_instance_id) as writer:
    for n in range(count):
        # Every tenth record is far larger than PIPE_BUF (4 KiB).
        big = chr(ord("a") + n % 26) * 20_000 if n % 10 == 0 else ""
        writer.send("heartbeat", {"n": n, "big": big}, durable=n == count - 1)
    print(writer.writer)
"""


@BOTH
def test_many_processes_write_while_a_reader_polls(channel):
    processes, per_process, instances = 50, 200, 10
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER_SCRIPT,
                channel.url,
                str(n % instances),
                str(per_process),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]
    seen = []
    problems = []
    cursor = None
    polls_while_writing = 0
    while any(child.poll() is None for child in children):
        events, cursor = channel.read_events(cursor)
        seen.extend(events)
        problems.extend(cursor.problems)
        polls_while_writing += 1
    outputs = [child.communicate() for child in children]
    assert [child.returncode for child in children] == [0] * processes, outputs
    events, cursor = channel.read_events(cursor)
    seen.extend(events)
    problems.extend(cursor.problems)

    assert problems == []
    assert polls_while_writing > 0
    tokens = {out.strip() for out, _ in outputs}
    assert len(tokens) == processes
    keys = [(e.writer, e.sequence) for e in seen]
    assert len(keys) == len(set(keys)) == processes * per_process
    assert set(keys) == {(t, n) for t in tokens for n in range(per_process)}
    for event in seen:
        n = event.data["n"]
        assert event.sequence == n
        expected = chr(ord("a") + n % 26) * 20_000 if n % 10 == 0 else ""
        assert event.data["big"] == expected
    assert channel.read_events(cursor)[0] == []


@BOTH
def test_array_specs_are_one_file_and_read_back_by_step(channel):
    specs = {step: TaskSpec(100 + step, f"echo {step}", f"step-{step}") for step in range(5)}
    channel.put_array_specs(3, 1, specs)
    root = channel.root
    assert os.listdir(os.path.join(root, "specs")) == []
    assert os.listdir(os.path.join(root, "arrays")) == ["3.1.json"]
    for step, spec in specs.items():
        assert channel.get_array_step(3, 1, step) == spec
        assert channel.resolve_array_step(3, 1, step) == spec.task_instance_id
    with pytest.raises(ChannelError, match="has no step 5"):
        channel.get_array_step(3, 1, 5)


@BOTH
def test_array_step_falls_back_to_spec_files_for_a_bare_step_map(channel):
    channel.put_spec(TaskSpec(7, "echo seven", "seven"))
    channel.put_array(2, 0, {0: 7})
    assert channel.get_array_step(2, 0, 0).command == "echo seven"


@BOTH
def test_default_array_specs_of_a_transport_store_them_one_by_one(channel):
    # The base-class way, for transports that do not batch: same answers as the file way.
    from jobfleet.core.channel import Channel

    specs = {0: TaskSpec(40, "true", "a"), 1: TaskSpec(41, "false", "b")}
    Channel.put_array_specs(channel, 9, 0, specs)
    assert channel.get_spec(41).command == "false"
    assert Channel.get_array_step(channel, 9, 0, 1) == specs[1]
