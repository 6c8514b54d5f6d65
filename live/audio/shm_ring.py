"""Lock-free hand-off between two processes through shared memory: a ring of fixed-size records and a seqlock (the
synth's parameters; the frame the window's own process shows).

Why no locks: the synth's render process and the show's process must never wait on each other (a lock held by a
process that the machine or the GIL stalls would stall the other). Each structure has exactly one writer and one
reader. Positions are 64-bit counters that only grow (they never wrap in practice: 2**63 frames is millions of
years at 48 kHz); the buffer index is position % capacity. Each counter is written by one side only, as one aligned
8-byte store, which x86-64 and ARMv8 make atomic; the writer stores the data before it advances its counter and the
reader copies the data before it advances its own, which is all single-producer/single-consumer needs on x86-64's
ordered stores (on weakly ordered CPUs a fence would go between the two: numpy offers none, hence the note).

The records live in a numpy view of a multiprocessing.shared_memory block, so the rendering side writes a block with
one slice assignment and the reading side copies it out with one more.
"""

from __future__ import annotations

from multiprocessing import resource_tracker, shared_memory

import numpy as np

HEADER = 192  # bytes: writer counter, reader counter and overflow count, each on its own 64-byte cache line
_WRITTEN, _READ, _OVERFLOW = 0, 8, 16  # int64 indices into the header (byte offsets 0, 64, 128)


class ShmRing:
    """A single-producer/single-consumer ring of `capacity` records of `width` values, in shared memory.

    Created by one process (name=None) and attached to by the other (by `name`). Neither side ever blocks:
    `write` takes what fits and counts the rest as overflow (the caller decides whether to wait and retry), and
    `read` returns what is there.
    """

    def __init__(self, capacity: int, width: int, dtype: type = np.float32, name: str | None = None) -> None:
        self.capacity, self.width, self.dtype = capacity, width, np.dtype(dtype)
        size = HEADER + capacity * width * self.dtype.itemsize
        self.shm = _attach(name, size)
        self._owner = name is None
        self._counters = np.ndarray((HEADER // 8,), dtype=np.int64, buffer=self.shm.buf)
        self._data = np.ndarray((capacity, width), dtype=self.dtype, buffer=self.shm.buf, offset=HEADER)
        if self._owner:
            self._counters[:] = 0

    @property
    def name(self) -> str:
        return self.shm.name

    @property
    def written(self) -> int:
        """Records written so far (the writer's position)."""
        return int(self._counters[_WRITTEN])

    @property
    def read_position(self) -> int:
        """Records read so far (the reader's position)."""
        return int(self._counters[_READ])

    @property
    def overflow(self) -> int:
        """Records a writer could not put in because the ring was full."""
        return int(self._counters[_OVERFLOW])

    @property
    def available(self) -> int:
        """Records waiting for the reader."""
        return int(self._counters[_WRITTEN]) - int(self._counters[_READ])

    def write(self, records: np.ndarray) -> int:
        """Append as many of `records` ((n, width)) as fit; returns how many; the rest count as overflow."""
        written = int(self._counters[_WRITTEN])
        n = min(len(records), self.capacity - (written - int(self._counters[_READ])))
        if n < len(records):
            self._counters[_OVERFLOW] += len(records) - n
        if n > 0:
            self._copy(written, records[:n], into_ring=True)
            self._counters[_WRITTEN] = written + n  # after the data: the reader never sees a half-written record
        return n

    def read(self, limit: int | None = None) -> np.ndarray:
        """Up to `limit` of the waiting records (all by default), oldest first, copied out; the ring's space is
        freed only after the copy."""
        read = int(self._counters[_READ])
        n = int(self._counters[_WRITTEN]) - read
        if limit is not None:
            n = min(n, limit)
        target = np.empty((n, self.width), self.dtype)
        if n > 0:
            self._copy(read, target, into_ring=False)
            self._counters[_READ] = read + n
        return target

    def _copy(self, position: int, records: np.ndarray, into_ring: bool) -> None:
        """Copy between `records` and the ring from absolute `position`, in at most two slices (the wrap)."""
        start = position % self.capacity
        first = min(len(records), self.capacity - start)
        pairs = ((self._data[start:start + first], records[:first]),
                 (self._data[:len(records) - first], records[first:]))
        for ring_part, outside in pairs:
            if into_ring:
                ring_part[...] = outside
            else:
                outside[...] = ring_part

    def close(self) -> None:
        """Detach; the creating side also frees the memory. Safe to call twice."""
        if self.shm.buf is None:
            return
        del self._counters, self._data  # views of the memory must go before it can be unmapped
        self.shm.close()
        if self._owner:
            self.shm.unlink()


class Seqlock:
    """A snapshot of `size` values (float64 by default; uint8 for a video frame) that one process writes and
    another reads without locks.

    The writer makes the sequence number odd, writes the values, and makes it even again; a reader copies the
    values between two reads of the sequence number and keeps the copy only if both were the same even number.
    A reader that loses the race `tries` times in a row (the writer is mid-update each time) keeps its last good
    copy: it never waits.
    """

    def __init__(self, size: int, name: str | None = None, dtype: type = np.float64) -> None:
        self.size, self.dtype = size, np.dtype(dtype)
        self.shm = _attach(name, 8 + size * self.dtype.itemsize)
        self._owner = name is None
        self._seq = np.ndarray((1,), dtype=np.int64, buffer=self.shm.buf)
        self._data = np.ndarray((size,), dtype=self.dtype, buffer=self.shm.buf, offset=8)
        if self._owner:
            self._seq[0] = 0
            self._data[:] = 0
        self._last = np.zeros(size, self.dtype)
        self.torn = 0  # reads that found the writer mid-update (retried)

    @property
    def name(self) -> str:
        return self.shm.name

    @property
    def sequence(self) -> int:
        """How many updates were published (each update advances it by 2)."""
        return int(self._seq[0])

    def write(self, values: np.ndarray) -> None:
        seq = int(self._seq[0])
        self._seq[0] = seq + 1
        self._data[:] = values
        self._seq[0] = seq + 2

    def read(self, tries: int = 4) -> np.ndarray:
        """The newest complete snapshot (a copy), or the last one read if the writer kept it busy."""
        for _ in range(tries):
            before = int(self._seq[0])
            if before % 2 == 0:
                copy = self._data.copy()
                if int(self._seq[0]) == before:
                    self._last = copy
                    return copy
            self.torn += 1
        return self._last.copy()

    def close(self) -> None:
        """Detach; the creating side also frees the memory. Safe to call twice."""
        if self.shm.buf is None:
            return
        del self._data, self._seq
        self.shm.close()
        if self._owner:
            self.shm.unlink()


def _attach(name: str | None, size: int) -> shared_memory.SharedMemory:
    """A new block (name None) or the one called `name`. Python before 3.13 registers an attached block with the
    attaching process's resource tracker too, which then unlinks it when that process exits, under its creator's
    feet: only the creator may free it, so the attaching side unregisters (3.13's track=False does the same)."""
    shm = shared_memory.SharedMemory(name=name, create=name is None, size=size)
    if name is not None:
        resource_tracker.unregister(shm._name, "shared_memory")  # noqa: SLF001 (the tracker knows it by _name)
    return shm
