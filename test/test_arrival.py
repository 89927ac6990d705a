"""Arrival checks of camera messages before pairing (occo_ros.core.arrival), no ROS needed."""

from __future__ import annotations

import types

import cv2
from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np
import pytest

from occo_ros.core.arrival import check_arrival
from occo_ros.core.codec import array_to_image_fields
from occo_ros.params import PARAMS, make_params

pytestmark = [pytest.mark.core]

PARAMS_DEFAULT = make_params({spec.name: spec.default for spec in PARAMS})
NOW = 1_700_000_000 * 10**9


def image(fields_encoding='mono16', height=4, width=6, **changes):
    """Image fields of a valid ``fields_encoding`` image, with ``changes`` applied."""
    dtype = np.uint16 if fields_encoding == 'mono16' else np.uint8
    channels = 3 if fields_encoding in ('bgr8', 'rgb8') else 1
    shape = (height, width, channels) if channels > 1 else (height, width)
    fields = array_to_image_fields(np.ones(shape, dtype), fields_encoding)
    fields.update(changes)
    return types.SimpleNamespace(**fields)


def compressed(ext, pixels, fmt='jpeg'):
    return types.SimpleNamespace(format=fmt, data=cv2.imencode(ext, pixels)[1].tobytes())


def test_good_messages_pass():
    assert check_arrival('thermal', image('mono16'), NOW, NOW, PARAMS_DEFAULT) is None
    assert check_arrival('rgb', image('bgr8'), NOW - 10**8, NOW, PARAMS_DEFAULT) is None
    jpeg = compressed('.jpg', np.zeros((8, 8, 3), np.uint8))
    assert check_arrival('rgb', jpeg, NOW, NOW, PARAMS_DEFAULT) is None


@pytest.mark.parametrize('stream, msg, counter, kind', [
    ('thermal', image('bgr8'), 'bad_thermal', 'encoding'),
    ('rgb', image('mono16'), 'bad_rgb', 'encoding'),
    ('thermal', image('mono16', data=b'12'), 'bad_thermal', 'data'),
    ('rgb', image('bgr8', step=2), 'bad_rgb', 'step'),
    ('rgb', compressed('.png', np.zeros((4, 4), np.uint16)), 'bad_rgb', 'encoding'),
    ('rgb', types.SimpleNamespace(format='jpeg', data=b'junk'), 'bad_rgb', 'compressed'),
])
def test_malformed_messages_are_refused_with_their_stream_counter(stream, msg, counter, kind):
    refusal = check_arrival(stream, msg, NOW, NOW, PARAMS_DEFAULT)
    assert (refusal.counter, refusal.kind) == (counter, kind)


def test_the_pixel_limit_is_the_parameter():
    params = make_params({**{s.name: s.default for s in PARAMS}, 'max_input_pixels': 23})
    refusal = check_arrival('thermal', image('mono8'), NOW, NOW, params)
    assert refusal.kind == 'too_large' and 'limit of 23' in refusal.message
    big = types.SimpleNamespace(height=8000, width=8000, encoding='bgr8', is_bigendian=0,
                                step=24000, data=b'')
    assert check_arrival('rgb', big, NOW, NOW, PARAMS_DEFAULT).kind == 'too_large'


def test_zero_and_far_future_stamps_are_refused_as_bad_stamp():
    refusal = check_arrival('rgb', image('bgr8'), 0, NOW, PARAMS_DEFAULT)
    assert (refusal.counter, refusal.kind) == ('bad_stamp', 'zero_stamp')
    future = (2**31 - 1) * 10**9
    refusal = check_arrival('thermal', image(), future, NOW, PARAMS_DEFAULT)
    assert (refusal.counter, refusal.kind) == ('bad_stamp', 'future_stamp')
    assert 'ahead of the node clock' in refusal.message
    # a little ahead (clock skew within max_age) passes; simulated time before /clock too
    assert check_arrival('thermal', image(), NOW + 4 * 10**8, NOW, PARAMS_DEFAULT) is None
    assert check_arrival('thermal', image(), future, 0, PARAMS_DEFAULT) is None


def test_a_malformed_message_is_counted_on_its_stream_even_with_a_bad_stamp():
    refusal = check_arrival('thermal', image(encoding='bayer_rggb8'), 0, NOW, PARAMS_DEFAULT)
    assert refusal.counter == 'bad_thermal'


@settings(max_examples=300, deadline=None)
@given(stream=st.sampled_from(['thermal', 'rgb']), stamp=st.integers(-2**63, 2**63),
       height=st.integers(0, 10**5), width=st.integers(0, 10**5), step=st.integers(0, 10**6),
       encoding=st.text(max_size=12), data=st.binary(max_size=200),
       fmt=st.one_of(st.none(), st.text(max_size=30)))
def test_any_message_gets_an_answer_never_an_exception(stream, stamp, height, width, step,
                                                       encoding, data, fmt):
    fields = dict(height=height, width=width, step=step, encoding=encoding, is_bigendian=0,
                  data=data)
    msg = types.SimpleNamespace(**(fields if fmt is None else dict(format=fmt, data=data)))
    refusal = check_arrival(stream, msg, stamp, NOW, PARAMS_DEFAULT)
    assert refusal is None or refusal.counter in ('bad_thermal', 'bad_rgb', 'bad_stamp')
