"""The control inputs' threads ask the scheduler to run them before the show's other work.

Why: measured with `live bench --audio --hog` (2-core VM, the vj show, a busy Python loop per core at normal
priority and a 10,000 messages/s OSC storm), the OSC thread at the default priority fell up to 200 ms behind, so a
note waited that long to be read (its kernel arrival time keeps its timing only for waits of a few ms). At nice -10
it still came too late for its frame (the render process's 1 ms hand-off margin) for a fifth of the notes under a
hog and a storm, and OSC note -> onset p95 was 10.6 ms. A performer's controls come before a frame of video: the
threads that read them ask for real-time priority, below the synth's renderer and the audio server, else a lower
nice value. They are cheap (they mostly wait; a storm's stale writes are skipped, and each sender is rate limited),
so running them first costs the video little.
"""

from __future__ import annotations

import os
import threading

CONTROL_RT_PRIORITY = 2  # SCHED_FIFO, below the render process's (render_process.RT_PRIORITY) and JACK's threads
CONTROL_NICE = -10  # else: the scheduler gives a nice -10 thread about 10x the share of a nice 0 one (CFS weights)


def favour_this_thread() -> bool:
    """Give the calling thread SCHED_FIFO at CONTROL_RT_PRIORITY, else CONTROL_NICE; False where the system allows
    neither (both need CAP_SYS_NICE or an rtprio/nice limit, as the renderer does: `live doctor`), and the thread
    keeps its priority."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(CONTROL_RT_PRIORITY))
        return True
    except (OSError, AttributeError):  # not permitted, or not Linux
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), CONTROL_NICE)
    except (OSError, AttributeError):  # not permitted, or not Linux (threads share one nice value elsewhere)
        return False
    return True
