"""Pipe and Connection: the stdlib's behaviour, across processes, and EOF from a dead holder."""

from __future__ import annotations

import array
import multiprocessing
import multiprocessing.connection
import os
import pickle
import socket
import stat
import subprocess
import sys
import threading
from typing import Any, Optional

import pytest

from manycore._connection import BufferTooShort, Client, Connection, Listener, Pipe, wait
from tests import helpers
from tests import workloads_ipc as w
from tests.helpers import TIMEOUT, start_process


def _finish(process: Any) -> None:
    process.join(TIMEOUT)
    assert process.exitcode is not None, "child did not exit"


# --- in one process -------------------------------------------------------------------------


@pytest.mark.parametrize("duplex", [True, False])
def test_send_recv_objects_in_order(duplex: bool) -> None:
    r, s = Pipe(duplex)
    with r, s:
        items = [None, 1, "two", (3.0, [4]), {"five": b"6"}, b"", b"x" * 100_000]
        for item in items:
            s.send(item)
        assert [r.recv() for _ in items] == items


def test_lambda_travels_by_value() -> None:
    a, b = Pipe()
    with a, b:
        a.send(lambda x: x + 1)
        assert b.recv()(1) == 2


def test_big_messages_both_ways() -> None:
    a, b = Pipe()
    with a, b:
        big = os.urandom(3 << 20)
        t = threading.Thread(target=a.send_bytes, args=(big,))
        t.start()
        assert b.recv_bytes() == big
        t.join(TIMEOUT)
        t = threading.Thread(target=b.send, args=(bytearray(big),))
        t.start()
        assert a.recv() == bytearray(big)
        t.join(TIMEOUT)


def test_numpy_array_roundtrip() -> None:
    np = pytest.importorskip("numpy")
    a, b = Pipe()
    with a, b:
        arr = np.arange(200_000, dtype=np.float64).reshape(400, 500)[:, ::2]
        t = threading.Thread(target=a.send, args=(arr,))
        t.start()
        got = b.recv()
        t.join(TIMEOUT)
        assert got.dtype == arr.dtype and (got == arr).all()


def test_send_bytes_offset_and_size() -> None:
    a, b = Pipe()
    with a, b:
        a.send_bytes(b"abcdef", 2)
        a.send_bytes(b"abcdef", 1, 3)
        a.send_bytes(array.array("i", [1, 2, 3]))
        a.send_bytes(b"")
        assert b.recv_bytes() == b"cdef"
        assert b.recv_bytes() == b"bcd"
        assert b.recv_bytes() == array.array("i", [1, 2, 3]).tobytes()
        assert b.recv_bytes() == b""
        for args, text in [
            ((-1,), "offset is negative"),
            ((7,), "buffer length < offset"),
            ((0, -1), "size is negative"),
            ((4, 3), "buffer length < offset \\+ size"),
        ]:
            with pytest.raises(ValueError, match=text):
                a.send_bytes(b"abcdef", *args)
        assert not b.poll(0)  # nothing was sent by the failed calls


def test_recv_bytes_maxlength_closes() -> None:
    a, b = Pipe()
    with a, b:
        a.send_bytes(b"x" * 10)
        with pytest.raises(OSError, match="bad message length"):
            b.recv_bytes(5)
        assert b.closed
        with pytest.raises(ValueError):
            a.recv_bytes(-1)


def test_recv_bytes_into_and_buffer_too_short() -> None:
    a, b = Pipe()
    with a, b:
        buf = bytearray(10)
        a.send_bytes(b"hello")
        assert b.recv_bytes_into(buf, 3) == 5
        assert buf == b"\0\0\0hello\0\0"
        ints = array.array("i", [0] * 4)
        a.send_bytes(array.array("i", [7, 8]))
        assert b.recv_bytes_into(ints, 4) == 8
        assert list(ints) == [0, 7, 8, 0]
        big = os.urandom(100_000)
        t = threading.Thread(target=a.send_bytes, args=(big,))
        t.start()
        target = bytearray(200_000)
        assert b.recv_bytes_into(target) == len(big)
        t.join(TIMEOUT)
        assert target[: len(big)] == big
        a.send_bytes(b"too long for it")
        with pytest.raises(BufferTooShort) as info:
            b.recv_bytes_into(bytearray(4))
        assert info.value.args[0] == b"too long for it"
        assert isinstance(info.value, multiprocessing.BufferTooShort)
        a.send_bytes(b"next")  # the stream is still in step
        assert b.recv_bytes() == b"next"
        with pytest.raises(ValueError, match="negative offset"):
            b.recv_bytes_into(bytearray(4), -1)
        with pytest.raises(ValueError, match="offset too large"):
            b.recv_bytes_into(bytearray(4), 5)


def test_poll_and_eof() -> None:
    a, b = Pipe()
    assert not b.poll()
    assert not b.poll(0.05)
    a.send(1)
    assert b.poll(TIMEOUT)
    assert b.recv() == 1
    a.close()
    assert b.poll(TIMEOUT)  # EOF counts as readable, as in the stdlib
    with pytest.raises(EOFError):
        b.recv()
    b.close()


def test_closed_and_one_way_errors() -> None:
    r, s = Pipe(duplex=False)
    assert (r.readable, r.writable, s.readable, s.writable) == (True, False, False, True)
    with pytest.raises(OSError):
        r.send(1)
    with pytest.raises(OSError):
        s.recv()
    assert isinstance(r.fileno(), int)
    r.close()
    r.close()  # idempotent
    assert r.closed
    with pytest.raises(OSError, match="closed"):
        r.fileno()
    with pytest.raises(OSError, match="closed"):
        r.recv()
    with pytest.raises((BrokenPipeError, OSError)):
        s.send_bytes(b"nobody reads")
    s.close()


def test_a_negative_descriptor_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid handle -1"):
        Connection(-1)


def test_context_manager_closes() -> None:
    a, b = Pipe()
    with a as same:
        assert same is a
    assert a.closed
    b.close()


def test_unpicklable_send_raises_and_sends_nothing() -> None:
    a, b = Pipe()
    with a, b:
        with pytest.raises(TypeError):  # what the stdlib raises too
            a.send(threading.Lock())
        a.send("after")
        assert b.recv() == "after"


def test_wire_format_is_the_stdlib_one() -> None:
    s1, s2 = socket.socketpair()
    ours = Connection(s1.detach())
    theirs = multiprocessing.connection.Connection(s2.detach())
    try:
        ours.send({"a": 1})
        assert theirs.recv() == {"a": 1}
        theirs.send_bytes(b"x" * 70_000)
        assert ours.recv_bytes() == b"x" * 70_000
        theirs.send([1, 2])
        assert ours.recv() == [1, 2]
    finally:
        ours.close()
        theirs.close()


def test_wait_with_stdlib_and_ours() -> None:
    a, b = Pipe()
    c, d = Pipe()
    with a, b, c, d:
        assert wait([a, c], 0.05) == []
        assert multiprocessing.connection.wait([a, c], 0.05) == []
        b.send(1)
        assert wait([a, c], TIMEOUT) == [a]
        assert multiprocessing.connection.wait([a, c], TIMEOUT) == [a]


def test_bigger_kernel_buffers_asked_for() -> None:
    a, b = Pipe()
    with a, b:
        sock = socket.socket(fileno=b.fileno())
        try:
            size = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        finally:
            sock.detach()
        assert size >= 256 << 10
    r, s = Pipe(duplex=False)
    with r, s:
        # A one-way pipe is an OS pipe, as the stdlib's (faster to read than a socket).
        assert stat.S_ISFIFO(os.fstat(s.fileno()).st_mode)
        assert stat.S_ISFIFO(os.fstat(r.fileno()).st_mode)


# --- across processes -----------------------------------------------------------------------


def test_echo_upper_every_start_method(start_method: Optional[str]) -> None:
    parent, child = Pipe()
    with parent, child:
        p = start_process(start_method, w.echo_upper, child)
        parent.send("hello world")
        assert parent.poll(TIMEOUT)
        assert parent.recv() == "HELLO WORLD"
        _finish(p)


def test_one_way_pipe_to_child(start_method: Optional[str]) -> None:
    r, s = Pipe(duplex=False)
    with r, s:
        p = start_process(start_method, w.send_n, s, ("item", 1), 500)
        assert [r.recv() for _ in range(500) if r.poll(TIMEOUT)] == [("item", 1)] * 500
        _finish(p)
        with pytest.raises(EOFError):  # its only other holder has exited
            r.recv()


def test_eof_when_holder_dies_every_start_method(start_method: Optional[str]) -> None:
    parent, child = Pipe()
    with parent, child:  # the parent keeps its copy of child's end open: the classic trap
        p = start_process(start_method, w.die_without_reply, child)
        assert parent.poll(TIMEOUT), "poll() did not see the holder's death"
        with pytest.raises(EOFError):
            parent.recv()
        _finish(p)
        assert p.exitcode == 3


def test_data_sent_before_death_is_delivered_first() -> None:
    parent, child = Pipe(duplex=False)
    with parent, child:
        p = start_process("fork", w.send_then_die, child, {"last": "words"})
        assert parent.poll(TIMEOUT)
        assert parent.recv() == {"last": "words"}
        assert parent.poll(TIMEOUT)
        with pytest.raises(EOFError):
            parent.recv_bytes()
        _finish(p)


def test_wait_reports_holder_death() -> None:
    parent, child = Pipe()
    with parent, child:
        p = start_process("fork", w.die_without_reply, child)
        assert wait([parent], TIMEOUT) == [parent]
        with pytest.raises(EOFError):
            parent.recv()
        _finish(p)


@pytest.fixture
def sharer() -> Any:
    """Stops the stdlib's resource sharer afterwards: pickling a connection outside a
    process start hands its descriptor over through that listener thread, as the stdlib does."""
    yield
    from multiprocessing import resource_sharer

    resource_sharer.stop(TIMEOUT)


def test_connection_travels_through_a_pipe(sharer: None) -> None:
    a, b = Pipe()
    inner_parent, inner_child = Pipe()
    with a, b, inner_parent, inner_child:
        a.send(inner_child)
        received = b.recv()
        assert isinstance(received, Connection)
        with received:
            received.send("via a sent end")
            assert inner_parent.recv() == "via a sent end"


def test_pickle_outside_a_process_start_uses_the_resource_sharer(sharer: None) -> None:
    a, b = Pipe()
    with a, b:
        copy = pickle.loads(pickle.dumps(b))
        with copy:
            a.send(5)
            assert copy.recv() == 5


def test_a_stdlib_connection_travels_through_a_pipe(
    start_method: Optional[str], sharer: None
) -> None:
    # A Listener's connection is the stdlib's own class, which plain pickle takes as its
    # descriptor's number: it must go by multiprocessing's reducer, as the stdlib's send does.
    a, b = Pipe()
    with a, b:
        p = start_process(start_method, w.answer_on_piped_connection, b, "over a stdlib connection")
        # The listener is made after the child started: the child inherits nothing of it.
        with (
            Listener(family="AF_UNIX") as listener,
            Client(listener.address) as client,
            listener.accept() as served,
        ):
            a.send(served)
            assert client.poll(TIMEOUT), "nothing arrived on the sent connection"
            assert client.recv() == "over a stdlib connection"
        _finish(p)
    assert p.exitcode == 0


def test_reducers_the_program_registered_are_used() -> None:
    # multiprocessing.reduction.register changes how the stdlib's send pickles a type.
    from multiprocessing.reduction import ForkingPickler

    ForkingPickler.register(w.Registered, w.reduce_registered)
    try:
        a, b = Pipe()
        with a, b:
            a.send([w.Registered(1)])
            assert b.recv() == [("reduced", 1)]
            a.send([w.Registered(2), bytearray(1 << 20)])  # a big message goes another way
            first, big = b.recv()
            assert first == ("reduced", 2) and len(big) == 1 << 20
    finally:
        del ForkingPickler._extra_reducers[w.Registered]  # type: ignore[attr-defined]
    a, b = Pipe()
    with a, b:
        a.send(w.Registered(3))
        assert isinstance(b.recv(), w.Registered)


def test_listener_and_client_work_with_wait() -> None:
    with Listener(family="AF_UNIX") as listener:

        def connect() -> None:
            with Client(listener.address) as client:
                client.send("over a socket")
                client.recv()  # hold the line until the server has read

        t = threading.Thread(target=connect)
        t.start()
        with listener.accept() as server:
            assert wait([server], TIMEOUT) == [server]
            assert server.recv() == "over a socket"
            server.send("done")
        t.join(TIMEOUT)
        assert not t.is_alive()


_REDUCER_CHOICE = """
import pickle, sys
import multiprocessing.heap, multiprocessing.managers, multiprocessing.connection
from manycore import _reducers
plain = pickle.dumps((1, 6.5, "small"))
print(_reducers.needs_reducers(plain))  # the stdlib's own reducers: the plain pickle stays
a, b = multiprocessing.Pipe()
print(_reducers.needs_reducers(pickle.dumps(a)))  # a stdlib Connection inside: made again
import multiprocessing.reduction
class Mine:
    pass
multiprocessing.reduction.register(Mine, lambda obj: (Mine, ()))
print(_reducers.needs_reducers(plain))  # a program's reducer applies to every pickle
"""


def test_only_a_programs_own_reducers_send_every_pickle_through_them() -> None:
    # The stdlib registers reducers for its heap arenas and (in its managers) arrays and dict
    # views; importing those modules must not send every small message down the slow path.
    done = subprocess.run(
        [sys.executable, "-c", _REDUCER_CHOICE],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=helpers.script_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "True"]
