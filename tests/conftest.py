"""Fixtures that start real parts: a JACK dummy server, an X server, a video file as the camera."""

from fixtures_audio import *  # noqa: F401,F403
from fixtures_live import *  # noqa: F401,F403
