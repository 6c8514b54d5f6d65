"""The control inputs' threads ask the scheduler to favour them over the show's other work.

Why: measured with `live bench --audio --hog` (2-core VM, the vj show, a busy Python loop per core at normal
priority and a 10,000 messages/s OSC storm), the OSC thread at the default priority fell up to 200 ms behind, so a
note waited that long to be read (its kernel arrival time keeps its timing only for waits of a few ms). A performer's
controls come before a frame of video: the threads that read them ask for a lower nice value. They are cheap (they
mostly wait; a storm's stale writes are skipped), so favouring them costs the video little.
"""

from __future__ import annotations

import os
import threading

CONTROL_NICE = -10  # the scheduler gives a nice -10 thread about 10x the share of a nice 0 one (CFS weights)


def favour_this_thread() -> bool:
    """Give the calling thread CONTROL_NICE; False where the system does not allow it (it needs CAP_SYS_NICE or a
    nice limit, as real-time priority does: `live doctor`), and the thread keeps its priority."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), CONTROL_NICE)
    except (OSError, AttributeError):  # not permitted, or not Linux (threads share one nice value elsewhere)
        return False
    return True
