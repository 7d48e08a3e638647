"""The output pump: bytes to the log untouched, a bounded decoded tail, no hang on stray writers."""

import os
import threading

from jobfleet.worker_node.output import OutputPump, Tail


def test_tail_keeps_the_last_characters_only():
    tail = Tail(limit=10)
    for n in range(1000):
        tail.feed(f"{n},")
    assert tail.text() == "".join(f"{n}," for n in range(1000))[-10:]
    assert len(tail._parts) <= 3  # compacted, not growing with the input


def test_character_split_across_reads_is_joined_and_bad_bytes_replaced(tmp_path):
    read_end, write_end = os.pipe()
    log = tmp_path / "out.log"
    pump = OutputPump(read_end, str(log), "stdout")
    pump.start()
    for piece in (b"caf\xc3", b"\xa9 ", b"\xff end"):
        os.write(write_end, piece)
    os.close(write_end)
    pump.join(timeout=10)
    assert not pump.is_alive()
    assert pump.tail.text() == "café \ufffd end"
    assert log.read_bytes() == b"caf\xc3\xa9 \xff end"
    assert pump.bytes_read == 11


def test_unopenable_log_keeps_draining_and_says_why(tmp_path):
    read_end, write_end = os.pipe()
    pump = OutputPump(read_end, str(tmp_path / "missing-dir" / "out.log"), "stderr")
    pump.start()
    os.write(write_end, b"x" * 100_000)
    os.close(write_end)
    pump.join(timeout=10)
    assert pump.bytes_read == 100_000
    assert "cannot open the log" in pump.log_error


def test_stop_ends_a_pump_whose_pipe_another_process_keeps_open():
    read_end, write_end = os.pipe()  # write_end stays open: a stray writer we cannot kill
    pump = OutputPump(read_end, None, "stdout")
    pump.start()
    os.write(write_end, b"last words\n")
    stopped = threading.Event()
    threading.Thread(target=lambda: (pump.join(), stopped.set()), daemon=True).start()
    pump.stop()
    assert stopped.wait(timeout=10), "the pump did not stop"
    assert pump.tail.text() == "last words\n"
    os.close(write_end)
