"""What a camera message must pass on arrival, before it may enter pairing (no ROS import).

The checks are cheap (no decoding, see codec.check_image / codec.check_compressed) so they
run in the subscription callback for every message: a malformed message is counted once,
with its reason, whether or not it would ever have found a partner, and never takes a place
in the pairing queues. Checked:

* the image: encoding accepted on that stream (thermal: one channel; RGB: colour or gray,
  raw or PNG/JPEG), size, step, data length, NaN/inf in float images, and the pixel limit
  ``max_input_pixels`` (compressed images: from their header);
* the stamp: zero (a driver that does not stamp) or further ahead of the node clock than
  ``max_age`` (a clock far off; stamps as far behind are dropped as stale after pairing).
  With simulated time the future check waits until the clock runs (a node clock of 0).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from occo_ros.core import codec
from occo_ros.params import FusionSettings

ENCODINGS = {'thermal': codec.THERMAL_ENCODINGS, 'rgb': codec.RGB_ENCODINGS}
#: bits per sample a compressed image may have on each stream
BIT_DEPTHS = {'thermal': 16, 'rgb': 8}


class Refusal(NamedTuple):
    """Why a message was refused: ``counter`` ('bad_thermal', 'bad_rgb' or 'bad_stamp'),
    ``kind`` (codec's reason, or 'zero_stamp' / 'future_stamp') and a one-line message."""

    counter: str
    kind: str
    message: str


def check_arrival(stream: str, msg: Any, stamp_ns: int, now_ns: int,
                  settings: FusionSettings) -> Refusal | None:
    """The reason to refuse ``msg`` of ``stream`` ('thermal' or 'rgb') stamped ``stamp_ns``
    on arrival at node clock ``now_ns``, or None when it may be paired. Never raises for any
    content of ``msg`` (a sensor_msgs Image or CompressedImage, duck-typed)."""
    try:
        if hasattr(msg, 'format'):
            codec.check_compressed(msg.format, msg.data, settings.max_input_pixels,
                                   BIT_DEPTHS[stream])
        else:
            codec.check_image(msg, ENCODINGS[stream], settings.max_input_pixels)
    except codec.ImageDecodeError as exc:
        return Refusal(f'bad_{stream}', exc.reason, str(exc))
    if stamp_ns <= 0:
        return Refusal('bad_stamp', 'zero_stamp', f'{stream} message stamped {stamp_ns} ns '
                       '(zero or negative): the camera driver does not stamp its images')
    ahead = (stamp_ns - now_ns) * 1e-9
    if now_ns > 0 and ahead > settings.max_age:
        return Refusal('bad_stamp', 'future_stamp',
                       f'{stream} stamp is {ahead:.3f} s ahead of the node clock (more than '
                       f'max_age {settings.max_age} s): the camera and node clocks disagree')
    return None
