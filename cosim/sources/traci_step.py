"""The TraCI backend's hot path: every vehicle's values read in one request, decoded by cosim.

Over TraCI cosim reads every vehicle through one context subscription (see
:mod:`cosim.sources.sumo`). It is made anew at each read with ``end`` = now
(:func:`context_request`): SUMO answers it at once and drops it at its next step, where a
standing subscription would be evaluated after every simulation step, only the slot's last
answer being read. The ``traci`` package decodes such an answer value by value in Python (a few
``struct`` calls per variable and vehicle): on A10KW (~1,100 vehicles) that was most of the
plugin process's CPU time (docs/performance.md, "Issue 14, third pass"). Our subscription always
has the same shape, so :class:`ContextDecoder` decodes it in bulk instead: one short Python loop
over the vehicles finds where each record starts (two lengths per record), numpy gathers every
record's fixed-size part at once and converts the big-endian doubles, and the strings are cut and
decoded by C-level ``map``. An answer not in the expected shape (a variable that reports an
error, an unexpected type, a cut message) is decoded by ``traci`` itself, so the values are
``traci``'s wherever they come from. ``traci`` still connects, steps and sends every other
command.

Written from the TraCI protocol (SUMO documentation: "TraCI/Protocol", "TraCI/Object Context
Subscription"): a message is an int32 total length followed by commands; a command is its length
(ubyte, or 0 and an int32 that counts the length fields too), its id and its content; an answer
starts with a status (ubyte length, ubyte command id, ubyte result, string description). A
context subscription's answer then holds: the response id, the EGO object's id (string), the
context domain (ubyte), the number of variables (ubyte), the number of objects (int32), and per
object its id (string) and per variable its id (ubyte), a status (ubyte, 0 = OK) and the typed
value (ubyte type, then the value: double = 8 bytes, 2D position = two doubles, string = int32
length + UTF-8 bytes). Integers and doubles are big-endian. The subscribe command: its id, begin
and end time (doubles), the EGO object's id, the context domain, the range (double), the number
of variables and their ids.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import traci.constants as tc
from traci.exceptions import FatalTraCIError, TraCIException

_INT = struct.Struct("!i").unpack_from
_RESULTS = {0x00: "OK", 0x01: "Not implemented", 0xFF: "Error"}

#: vehicle variables the decoder knows: wire type and the snapshot column(s) its value fills
WIRE = {
    tc.VAR_POSITION: (tc.POSITION_2D, ("x", "y")),
    tc.VAR_SPEED: (tc.TYPE_DOUBLE, ("speed",)),
    tc.VAR_ANGLE: (tc.TYPE_DOUBLE, ("angle",)),
    tc.VAR_ACCELERATION: (tc.TYPE_DOUBLE, ("accel",)),
    tc.VAR_LANEPOSITION: (tc.TYPE_DOUBLE, ("lane_pos",)),
    tc.VAR_LANE_ID: (tc.TYPE_STRING, ()),
}


class ContextDecoder:
    """Decodes the response to one context subscription of vehicle variables on object
    ``anchor`` (domain ``response``, e.g. a junction's): ``variables`` in subscription order,
    every one of them in :data:`WIRE`, the fixed-size ones first and exactly one string (the
    lane) last."""

    def __init__(self, anchor: str, variables: tuple[int, ...],
                 response: int = tc.RESPONSE_SUBSCRIBE_JUNCTION_CONTEXT):
        *fixed, last = variables
        if WIRE[last][0] != tc.TYPE_STRING or any(WIRE[v][0] == tc.TYPE_STRING for v in fixed):
            raise ValueError("ContextDecoder: the fixed-size variables first, then exactly one string")
        self.anchor = anchor.encode("utf8")
        self.variables = tuple(variables)
        self.response = response
        # one record after the vehicle's id: per fixed variable [id, status, type, value], then the
        # string's [id, status, type] and its int32 length; its bytes follow
        names, formats, offsets, check_at, check = [], [], [], [], []
        off = 0
        for v in variables:
            wire, cols = WIRE[v]
            check_at += [off, off + 1, off + 2]
            check += [v, tc.RTYPE_OK, wire]
            off += 3
            for c in cols:
                names.append(c)
                formats.append(">f8")
                offsets.append(off)
                off += 8
        names.append("strlen")
        formats.append(">i4")
        offsets.append(off)
        self.width = off + 4  # bytes from the end of the id to the string's bytes
        self.dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": self.width})
        self.columns = tuple(names[:-1])
        self._span = np.arange(self.width)
        self._check_at = np.array(check_at)
        self._check = np.array(check, dtype=np.uint8)

    def decode(self, buf: bytes, p: int) -> tuple[int, tuple[list[str], list[str], dict[str, np.ndarray]]] | None:
        """The subscription response starting at ``buf[p]``: (where it ends, (vehicle ids, lanes,
        {column: float64 array})) in SUMO's order, or None when it is not ours or not of the
        expected shape (then ``traci`` decodes it)."""
        try:
            length, head = buf[p], 1
            if length == 0:
                length, head = _INT(buf, p + 1)[0], 5
            end = p + length
            q = p + head
            if buf[q] != self.response:
                return None
            n_id = _INT(buf, q + 1)[0]
            q += 5
            if buf[q:q + n_id] != self.anchor:
                return None
            q += n_id
            if buf[q] != tc.CMD_GET_VEHICLE_VARIABLE or buf[q + 1] != len(self.variables):
                return None
            n = _INT(buf, q + 2)[0]
            q += 6
            # where each record starts: the only sequential part (two lengths per vehicle)
            starts = [0] * n
            skip = self.width - 4
            for i in range(n):
                starts[i] = q
                b = q + 4 + _INT(buf, q)[0] + skip
                q = b + 4 + _INT(buf, b)[0]
        except (struct.error, IndexError):  # ran past the end: not the shape we expect
            return None
        if q != end or end > len(buf):
            return None
        if n == 0:
            return end, ([], [], {c: np.zeros(0) for c in self.columns})
        raw = np.frombuffer(buf, np.uint8)
        s = np.array(starts, dtype=np.intp)
        id_a = s + 4
        id_b = id_a + raw[s[:, None] + self._span[:4]].view(">i4")[:, 0]
        block = raw[id_b[:, None] + self._span]  # (n, width): every record's fixed part, one copy
        if not (block[:, self._check_at] == self._check).all():
            return None  # a variable with an error status or another type: traci's generic path
        rec = block.view(self.dtype)[:, 0]
        str_a = id_b + self.width
        str_b = str_a + rec["strlen"]
        cut = buf.__getitem__
        ids = list(map(bytes.decode, map(cut, map(slice, id_a.tolist(), id_b.tolist()))))
        strs = list(map(bytes.decode, map(cut, map(slice, str_a.tolist(), str_b.tolist()))))
        return end, (ids, strs, {c: rec[c].astype(np.float64) for c in self.columns})


def context_request(anchor: str, variables: tuple[int, ...], range_m: float):
    """A function of the time ``end_s`` giving the message that subscribes (junction ``anchor``'s
    context: every vehicle within ``range_m``, ``variables``) from now until ``end_s``: SUMO answers
    with the results at once, and drops the subscription after ``end_s``."""
    anchor_b = anchor.encode("utf8")
    tail = (struct.pack("!i", len(anchor_b)) + anchor_b
            + struct.pack("!BdB", tc.CMD_GET_VEHICLE_VARIABLE, range_m, len(variables)) + bytes(variables))
    length = 1 + 1 + 8 + 8 + len(tail)  # the command: its length, id, begin, end and the rest
    head = (struct.pack("!iBB", 4 + length, length, tc.CMD_SUBSCRIBE_JUNCTION_CONTEXT) if length <= 255 else
            struct.pack("!iBiB", 4 + length + 4, 0, length + 4, tc.CMD_SUBSCRIBE_JUNCTION_CONTEXT))
    head += struct.pack("!d", tc.INVALID_DOUBLE_VALUE)  # begin: now
    end = struct.Struct("!d").pack
    return lambda end_s: head + end(end_s) + tail


def read_context(conn: Any, message: bytes, decoder: ContextDecoder, anchor: str):
    """Sends ``message`` (from :func:`context_request`) over ``conn`` (a ``traci.Connection``) and
    decodes the answer through ``decoder``: its ``decode`` value without the end, or None where
    the decoder declined and ``traci`` decoded it into ``conn``'s context results for ``anchor``
    (what was there for ``anchor`` replaced; other objects' results, a user's own, untouched).
    Errors are ``traci``'s own: :class:`FatalTraCIError` when the connection is gone,
    :class:`TraCIException` when SUMO refuses the request."""
    sock = conn._socket
    if sock is None:
        raise FatalTraCIError("Connection already closed.")
    with conn._lock:
        sock.sendall(message)
        result = conn._recvExact()  # traci's: a socket error or timeout is None, as for its own commands
    if not result:
        sock.close()
        conn._socket = None
        raise FatalTraCIError("Connection closed by SUMO.")
    buf = result._content
    cmd, status = buf[1], buf[2]
    n_err = _INT(buf, 3)[0]
    if status or n_err:
        raise TraCIException(buf[7:7 + n_err].decode("utf8"), cmd, _RESULTS.get(status, status))
    if cmd != tc.CMD_SUBSCRIBE_JUNCTION_CONTEXT:
        raise FatalTraCIError(f"Received answer {cmd} for command {tc.CMD_SUBSCRIBE_JUNCTION_CONTEXT}.")
    p = 7 + n_err
    got = decoder.decode(buf, p)
    if got is not None:
        return got[1]
    conn._subscriptionMapping[decoder.response].getContext().pop(anchor, None)
    result._pos = p
    conn._readSubscription(result)
    return None
