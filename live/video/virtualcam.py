"""The show as a webcam other programs pick (a video call, OBS, a browser), through pyvirtualcam: a v4l2loopback
device on Linux, OBS's virtual camera on macOS and Windows."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from live.errors import LiveError
from live.parts import BasePart, KindSection

if TYPE_CHECKING:
    from live.show import Show

LINUX_FIX = ("sudo modprobe v4l2loopback exclusive_caps=1 card_label=live (the module comes with the "
             "v4l2loopback-dkms package), then start the show again")
OTHER_FIX = "install OBS Studio and start its virtual camera once, then start the show again"


class VirtualCamSection(KindSection):
    """`[[outputs]] kind = "virtualcam"`: the show as a virtual camera."""

    device: str = ""  # "" = the first one there is; on Linux a path such as "/dev/video10"


class VirtualCamera(BasePart):
    """Each frame to the virtual camera as it comes; never waits for the camera's own frame clock."""

    def __init__(self, device: str, width: int, height: int, fps: float) -> None:
        self.device, self.width, self.height, self.fps = device, width, height, fps
        self.frames = 0
        self._camera: Any = None

    @classmethod
    def from_show(cls, section: VirtualCamSection, show: Show) -> VirtualCamera:
        return cls(section.device, show.video.width, show.video.height, show.video.fps)

    def open(self) -> str:
        if self._camera is None:
            import pyvirtualcam  # here: a show without a virtual camera never loads its backends

            try:
                self._camera = pyvirtualcam.Camera(self.width, self.height, self.fps, fmt=pyvirtualcam.PixelFormat.BGR,
                                                   device=self.device or None)
            except RuntimeError as err:  # pyvirtualcam's one error type: no device, device busy, wrong format
                fix = LINUX_FIX if sys.platform.startswith("linux") else OTHER_FIX
                why = str(err).split(". ")[0]  # its own hint after that is the Linux one, and the fix says it
                raise LiveError(f"cannot open a virtual camera: {why}", fix) from None
        return f"Output: virtual camera {self._camera.device}"

    def write(self, image: np.ndarray, t: float) -> None:
        if self._camera is not None:
            self._camera.send(image)
            self.frames += 1

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            camera.close()

    def stats(self) -> dict[str, Any]:
        return {"frames": self.frames}

    def status(self) -> str:
        return f"virtual camera {self._camera.device}" if self._camera is not None else ""
