"""Approximate-time pairing: message_filters semantics, bounded queues, jumps back in time."""

import random

import pytest

from occo_ros.core.pairing import ApproximateTimePairer

pytestmark = [pytest.mark.core]

NS = 1_000_000_000


def stream(rate_hz, duration_s, offset_s=0.0, jitter_s=0.0, rng=None, drop=0.0):
    """(stamp_ns, name) of one camera: a nominal period with Gaussian stamp jitter and drops."""
    rng = rng or random.Random(0)
    n = int(duration_s * rate_hz)
    out = []
    for i in range(n):
        if rng.random() < drop:
            continue
        t = offset_s + i / rate_hz + (rng.gauss(0.0, jitter_s) if jitter_s else 0.0)
        out.append(int(t * NS))
    return out


def run(pairer, thermal, rgb, shuffle_window=0, rng=None, loop=0):
    """Feed both streams in stamp order (optionally shuffled locally) and collect pairs;
    messages are ('thermal'|'rgb', index, loop)."""
    events = [(t, 'thermal', ('thermal', i, loop)) for i, t in enumerate(thermal)]
    events += [(t, 'rgb', ('rgb', i, loop)) for i, t in enumerate(rgb)]
    events.sort(key=lambda e: e[0])
    if shuffle_window:
        rng = rng or random.Random(1)
        for start in range(0, len(events), shuffle_window):
            chunk = events[start:start + shuffle_window]
            rng.shuffle(chunk)
            events[start:start + shuffle_window] = chunk
    pairs = []
    for stamp, name, msg in events:
        pair = pairer.add(name, stamp, msg)
        assert pairer.waiting('thermal') <= pairer.queue_size
        assert pairer.waiting('rgb') <= pairer.queue_size
        if pair is not None:
            pairs.append(pair)
    return pairs


def check_invariants(pairer, pairs, slop):
    used = [p.thermal for p in pairs] + [p.rgb for p in pairs]
    assert len(used) == len(set(used)), 'a message was paired twice'
    for p in pairs:
        assert p.thermal[0] == 'thermal' and p.rgb[0] == 'rgb'
        assert p.dt < slop
    c = pairer.counts
    for name in ('thermal', 'rgb'):
        received = getattr(c, f'received_{name}')
        unpaired = getattr(c, f'unpaired_{name}')
        assert received == c.paired + unpaired + pairer.waiting(name)


@pytest.mark.parametrize('thermal_hz,rgb_hz', [(9, 30), (30, 30), (60, 30), (30, 60), (9, 9)])
def test_every_slow_frame_pairs_with_its_nearest_partner(thermal_hz, rgb_hz):
    slop = 0.5 / max(thermal_hz, rgb_hz)        # below half the faster period: unambiguous
    rng = random.Random(thermal_hz * 100 + rgb_hz)
    thermal = stream(thermal_hz, 10.0, offset_s=0.003, jitter_s=0.001, rng=rng)
    rgb = stream(rgb_hz, 10.0, jitter_s=0.001, rng=rng)
    pairer = ApproximateTimePairer(slop=slop, queue_size=10)
    pairs = run(pairer, thermal, rgb)
    check_invariants(pairer, pairs, slop)
    slow = thermal if thermal_hz <= rgb_hz else rgb
    assert len(pairs) >= len(slow) - 2
    for p in pairs:   # the partner is the nearest frame of the other camera
        other = rgb if thermal_hz <= rgb_hz else thermal
        mine = p.thermal_stamp_ns if thermal_hz <= rgb_hz else p.rgb_stamp_ns
        theirs = p.rgb_stamp_ns if thermal_hz <= rgb_hz else p.thermal_stamp_ns
        assert abs(theirs - mine) == min(abs(o - mine) for o in other)


def test_drops_leave_the_rest_paired_and_are_counted():
    rng = random.Random(7)
    thermal = stream(30, 10.0, offset_s=0.002, rng=rng, drop=0.3)
    rgb = stream(30, 10.0, rng=rng, drop=0.1)
    pairer = ApproximateTimePairer(slop=0.01, queue_size=5)
    pairs = run(pairer, thermal, rgb)
    check_invariants(pairer, pairs, 0.01)
    rgb_us = {round(t / 1000) for t in rgb}       # partners exist only 2 ms apart
    expected = sum(1 for t in thermal if round(t / 1000) - 2000 in rgb_us)
    assert len(pairs) == expected
    assert pairer.counts.unpaired_rgb > 0


def test_out_of_order_arrival_still_pairs_correctly():
    thermal = stream(30, 5.0, offset_s=0.004)
    rgb = stream(30, 5.0)
    pairer = ApproximateTimePairer(slop=0.01, queue_size=10)
    pairs = run(pairer, thermal, rgb, shuffle_window=6)
    check_invariants(pairer, pairs, 0.01)
    assert len(pairs) >= len(thermal) - 3
    assert all(abs(p.thermal_stamp_ns - p.rgb_stamp_ns - int(0.004 * NS)) < 10 for p in pairs)


def test_time_jumping_backwards_resets_instead_of_stalling():
    """A looping bag: the same 3 s replayed twice. Without the reset the queues would keep
    the first loop's late stamps and evict every new message (it has the smallest stamp)."""
    thermal = stream(30, 3.0, offset_s=0.002)
    rgb = stream(30, 3.0)
    pairer = ApproximateTimePairer(slop=0.01, queue_size=10)
    first = run(pairer, thermal, rgb)
    second = run(pairer, thermal, rgb, loop=1)
    check_invariants(pairer, first + second, 0.01)
    assert pairer.counts.time_jumps >= 1
    assert len(second) >= len(thermal) - 3


def test_small_backward_steps_within_tolerance_do_not_reset():
    pairer = ApproximateTimePairer(slop=0.01, queue_size=10, jump_back_tolerance=1.0)
    pairer.add('thermal', 5 * NS, 'a')
    pairer.add('thermal', int(4.5 * NS), 'b')
    assert pairer.counts.time_jumps == 0 and pairer.waiting('thermal') == 2
    pairer.add('thermal', 3 * NS, 'c')
    assert pairer.counts.time_jumps == 1 and pairer.waiting('thermal') == 1
    assert pairer.counts.unpaired_thermal == 2


def test_slop_is_exclusive_and_changeable_at_run_time():
    pairer = ApproximateTimePairer(slop=0.01)
    pairer.add('thermal', 0, 't0')
    assert pairer.add('rgb', int(0.01 * NS), 'r0') is None       # |dt| == slop: no pair
    pairer.slop = 0.02
    pair = pairer.add('rgb', int(0.015 * NS), 'r1')
    assert pair is not None and pair.thermal == 't0' and pair.rgb == 'r1'
    assert pair.dt == pytest.approx(0.015)


def test_same_stamp_replaces_and_overflow_evicts_oldest():
    pairer = ApproximateTimePairer(slop=0.01, queue_size=3)
    pairer.add('rgb', 1 * NS, 'old')
    pairer.add('rgb', 1 * NS, 'new')
    assert pairer.counts.unpaired_rgb == 1
    pair = pairer.add('thermal', 1 * NS, 't')
    assert pair.rgb == 'new'
    for i in range(5):
        pairer.add('rgb', (10 + i) * NS, i)
    assert pairer.waiting('rgb') == 3 and pairer.counts.unpaired_rgb == 3
    assert pairer.add('thermal', 10 * NS, 't') is None          # 10 s was evicted


@pytest.mark.parametrize('kwargs', [{'slop': 0}, {'slop': 0.1, 'queue_size': 0},
                                    {'slop': 0.1, 'jump_back_tolerance': 0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        ApproximateTimePairer(**kwargs)


def test_unknown_stream_is_refused():
    with pytest.raises(ValueError, match='unknown stream'):
        ApproximateTimePairer(slop=0.1).add('depth', 0, None)
