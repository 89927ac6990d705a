"""Parameter validation (occo_ros.params) against any value a parameter set can carry.

Property-based (hypothesis): every row of params.PARAMS gets NaN, +-inf, 0, negatives, huge
numbers, wrong types, empty and long lists. ``validate`` must answer with a reason or None and
never raise; what it accepts must build the FusionSettings and a thermal normaliser (the
run-time path that crashed the node on ``thermal_max inf``). The same values sent over DDS to a
running node are in test_node_hardening.py.
"""

from __future__ import annotations

import array
from dataclasses import fields
import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from occo_ros.engines.spec import FIELD_PARAMS
from occo_ros.params import (
    GROUPS,
    PARAMS,
    SPECS,
    FusionSettings,
    NodeParams,
    check_params,
    make_params,
    validate,
)
from occo_ros.pipeline import thermal_normalizer

pytestmark = [pytest.mark.core]

DEFAULTS = {spec.name: spec.default for spec in PARAMS}

SPECIAL_FLOATS = [math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, 1e308, -1e308, 5e-324, 1e-9]
#: the numbers at the edges: the special floats and the int64 extremes
EDGE_NUMBERS = [*SPECIAL_FLOATS, 0, -1, 2**63 - 1, -2**63]
special_floats = st.sampled_from(SPECIAL_FLOATS)
numbers = st.one_of(special_floats, st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(min_value=-2**63, max_value=2**63 - 1))
#: what a ROS parameter can hold: bool, int64, double, string, and arrays of those
any_value = st.one_of(
    st.booleans(), numbers, st.text(max_size=40),
    st.lists(numbers, max_size=40), st.lists(st.booleans(), max_size=5),
    st.lists(st.text(max_size=5), max_size=5), st.just([]), st.binary(max_size=8), st.none())


#: one value of each kind, given to every row (hypothesis adds random ones of these kinds)
EDGE_VALUES = [*EDGE_NUMBERS, True, False, '', 'x' * 40, [], [math.nan] * 9, [1e308] * 40,
               [True], ['a'], b'', None]


def answers_and_builds(name: str, value: object) -> None:
    problem = validate(name, value)
    assert problem is None or (isinstance(problem, str) and name in problem), (value, problem)
    if problem is not None:
        return
    try:
        params = make_params(dict(DEFAULTS, **{name: value}))
    except ValueError as exc:        # a cross-parameter rule (thermal_max > thermal_min)
        assert 'thermal' in str(exc), (value, exc)
        return
    thermal_normalizer(params)       # must not raise for an accepted parameter set


@pytest.mark.parametrize('name', sorted(SPECS))
def test_validate_answers_for_each_kind_of_value_and_what_it_accepts_builds(name):
    for value in EDGE_VALUES:
        answers_and_builds(name, value)


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(SPECS)), value=any_value)
def test_validate_answers_for_any_value_and_what_it_accepts_builds(name, value):
    answers_and_builds(name, value)


def refused_or_builds(lo: object, hi: object) -> None:
    values = dict(DEFAULTS, thermal_min=lo, thermal_max=hi)
    finite = math.isfinite(lo) and math.isfinite(hi)
    if finite and lo < hi:
        thermal_normalizer(make_params(values))
        return
    with pytest.raises(ValueError, match='thermal_m'):
        make_params(values)


def test_every_pair_of_special_thermal_bounds_is_refused_or_builds():
    for lo, hi in itertools.product(EDGE_NUMBERS, repeat=2):
        refused_or_builds(lo, hi)


@settings(max_examples=100, deadline=None)
@given(lo=numbers, hi=numbers)
def test_thermal_range_is_refused_with_a_reason_or_builds_a_normaliser(lo, hi):
    refused_or_builds(lo, hi)


@pytest.mark.parametrize('name, value, reason', [
    ('thermal_max', math.inf, 'thermal_max=inf must be a finite number'),
    ('thermal_min', -math.inf, 'thermal_min=-inf must be a finite number'),
    ('thermal_min', math.nan, 'thermal_min=nan must be a finite number'),
    ('slop', True, 'slop=True must be a finite number (got bool)'),
    ('input_width', 7, 'input_width=7 is below the minimum 8'),
    ('input_width', 64.0, 'input_width=64.0 must be an integer (got float)'),
    ('queue_size', 0, 'queue_size=0 is below the minimum 1'),
    ('rgb_compressed', 1, 'rgb_compressed=1 must be a bool (got int)'),
    ('thermal_topic', 5, 'thermal_topic=5 must be a str (got int)'),
    ('homography', [], 'homography needs 9 numbers, got 0'),
    ('homography', [1.0] * 1000, 'homography needs 9 numbers, got 1000'),
    ('crop', [0.0, math.nan, 1.0, 1.0], 'crop=[0.0, nan, 1.0, 1.0] must be a list of finite'),
    ('thermal_percentiles', [99.0, 1.0], 'must satisfy 0 <= low < high <= 100'),
    ('output_encoding', 'yuv422', "output_encoding='yuv422' is not one of"),
    ('max_input_pixels', 0, 'max_input_pixels=0 is below the minimum 1'),
    ('no_such_parameter', 1, "'no_such_parameter' is not a parameter of this node"),
])
def test_bad_values_are_refused_with_a_specific_reason(name, value, reason):
    assert reason in validate(name, value)


def test_a_long_value_is_shortened_in_the_reason():
    problem = validate('thermal_topic', list(range(10_000)))
    assert len(problem) < 200 and '...' in problem


def test_make_params_names_every_problem_and_converts_types():
    with pytest.raises(ValueError) as info:
        make_params(dict(DEFAULTS, thermal_max=math.inf, input_width=7))
    assert 'thermal_max=inf' in str(info.value) and 'input_width=7' in str(info.value)
    params = make_params(dict(DEFAULTS, thermal_min=100, crop=(0, 0, 1, 1)))
    assert params.thermal_min == 100.0 and isinstance(params.thermal_min, float)
    assert params.crop == (0.0, 0.0, 1.0, 1.0)


def test_a_double_array_as_rclpy_delivers_it_is_a_list():
    assert validate('thermal_percentiles', array.array('d', [2.0, 98.0])) is None
    params = make_params(dict(DEFAULTS, thermal_percentiles=array.array('d', [2.0, 98.0])))
    assert params.thermal_percentiles == (2.0, 98.0)


def test_every_row_is_in_one_group_and_each_group_has_its_record():
    """Node wiring (topics, QoS, diagnostics timing) apart from the fusion settings and the
    engine: occo-bag builds the settings and the EngineSpec, never the node's wiring."""
    groups = {g: {s.name for s in PARAMS if s.group == g} for g in GROUPS}
    assert sum(map(len, groups.values())) == len(PARAMS)
    assert groups['node'] == {f.name for f in fields(NodeParams)}
    assert groups['fusion'] == {f.name for f in fields(FusionSettings)}
    assert groups['engine'] == set(FIELD_PARAMS)
    assert {'thermal_topic', 'input_reliability', 'output_depth', 'diagnostics_period',
            'input_timeout'} <= groups['node']
    # what can change at run time changes the outputs (the fused image, or the JPEG of
    # fused/image/compressed), never the wiring or the engine
    assert {s.name for s in PARAMS if s.dynamic} <= groups['fusion'] | {'jpeg_quality'}


def test_the_group_records_take_their_rows_of_the_checked_values():
    values = check_params(dict(DEFAULTS, thermal_topic='ir', slop=1, crop=[0, 0, 1, 1]))
    assert NodeParams.from_values(values).thermal_topic == 'ir'
    fusion = FusionSettings.from_values(values)
    assert fusion == make_params(dict(DEFAULTS, slop=1.0, crop=(0.0, 0.0, 1.0, 1.0)))
    assert isinstance(fusion.slop, float) and fusion.crop == (0.0, 0.0, 1.0, 1.0)
    assert not hasattr(fusion, 'thermal_topic') and not hasattr(fusion, 'backend')
