"""EngineSpec: every engine option in one frozen, validated value, built from one table.

The options are the engine rows of the node's parameter table (occo_ros.params.PARAMS), so
the ROS parameters, config/fusion.yaml, the command-line options of the tools and
`create_engine` share names, defaults, allowed values and help texts:

    spec = EngineSpec.from_params(values)   # node / occo-bag: params.check_params values
    spec = EngineSpec.from_params({'backend': 'onnxruntime', 'device': 'cpu'})  # a mapping
    EngineSpec.add_arguments(parser); spec = EngineSpec.from_args(args)        # a CLI
    engine = create_engine(spec, logger)   # logger: .info/.warning
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
import dataclasses
import re
from typing import Any

from occo_ros.model.contract import MIN_INPUT_SIZE, EngineError
from occo_ros.params import (
    BACKENDS,
    PRECISIONS,
    SPECS,
    THERMAL_PARAMS,
    ThermalSettings,
    add_param_option,
    validate,
)

__all__ = ['BACKENDS', 'ENGINE_PARAMS', 'PRECISIONS', 'EngineSpec']

ENGINE_SUFFIXES = ('.engine', '.plan')
MODEL_SUFFIXES = ('.pt', '.onnx', *ENGINE_SUFFIXES)

#: The EngineSpec fields that are node parameters of the same name.
FIELD_PARAMS = ('backend', 'model_path', 'device', 'precision', 'engine_cache_dir',
                'force_rebuild', 'num_threads', 'calibration_dir', 'workspace_mb')
#: The node parameters an EngineSpec is made of (declare them read-only: start-up only);
#: its input_size is (input_height, input_width).
ENGINE_PARAMS = (*FIELD_PARAMS, 'input_height', 'input_width')
_DEVICE = re.compile(r'auto|cpu|cuda(:\d+)?|dla(:\d+)?')


@dataclasses.dataclass(frozen=True)
class EngineSpec:
    """What engine to create; invalid values raise EngineError naming each problem.

    Attributes:
        backend: 'auto', 'torch', 'onnxruntime' or 'tensorrt'.
        model_path: .pt, .onnx or .engine/.plan file; '' = the shipped default model.
        device: 'auto', 'cpu', 'cuda', 'cuda:N' or 'dla:K' (TensorRT DLA core K).
        precision: 'fp32', 'fp16' or 'int8' (requested; EngineInfo says what runs).
        input_size: (H, W) the engine will see; None = the model's own (fixed ONNX/engine).
        engine_cache_dir: ONNX export and engine cache; '' = $OCCO_ROS_CACHE or
            ~/.cache/occo_ros.
        force_rebuild: rebuild the TensorRT engine even if a valid one is cached.
        num_threads: CPU threads for torch / onnxruntime; 0 = the library default.
        calibration_dir: INT8 calibration pairs (vi/ and ir/ folders); '' = none.
        workspace_mb: TensorRT builder workspace in MiB.
        thermal: the node's thermal normalisation (ThermalSettings, or its five values in
            order): INT8 calibration images are normalised as the node normalises its input.
    """

    backend: str = SPECS['backend'].default
    model_path: str = SPECS['model_path'].default
    device: str = SPECS['device'].default
    precision: str = SPECS['precision'].default
    input_size: tuple[int, int] | None = None
    engine_cache_dir: str = SPECS['engine_cache_dir'].default
    force_rebuild: bool = SPECS['force_rebuild'].default
    num_threads: int = SPECS['num_threads'].default
    calibration_dir: str = SPECS['calibration_dir'].default
    workspace_mb: int = SPECS['workspace_mb'].default
    thermal: ThermalSettings = ThermalSettings.from_values({})

    def __post_init__(self) -> None:
        if len(self.thermal) == len(THERMAL_PARAMS):
            object.__setattr__(self, 'thermal', ThermalSettings.from_values(
                dict(zip(THERMAL_PARAMS, self.thermal))))
        for name in ('model_path', 'engine_cache_dir', 'calibration_dir'):
            object.__setattr__(self, name, str(getattr(self, name) or ''))
        if self.input_size is not None:
            try:
                size = tuple(int(value) for value in self.input_size)
            except (TypeError, ValueError):
                size = ()
            object.__setattr__(self, 'input_size', size)
        problems = self.problems()
        if problems:
            raise EngineError('invalid engine options: ' + '; '.join(problems))

    def problems(self) -> list[str]:
        """Every invalid option with its value and what is allowed (empty: valid)."""
        found = [validate(name, getattr(self, name)) for name in FIELD_PARAMS]
        if len(self.thermal) != len(THERMAL_PARAMS):
            found.append(f'thermal needs {len(THERMAL_PARAMS)} values {THERMAL_PARAMS}, got '
                         f'{self.thermal}')
        else:
            found += [validate(name, list(value) if isinstance(value, tuple) else value)
                      for name, value in self.thermal._asdict().items()]
        if not _DEVICE.fullmatch(self.device):
            found.append(f"device={self.device!r} is not 'auto', 'cpu', 'cuda', 'cuda:N' or "
                         "'dla:K'")
        suffix = '.' + self.model_path.rsplit('.', 1)[-1] if '.' in self.model_path else ''
        if self.model_path and suffix not in MODEL_SUFFIXES:
            found.append(f'model_path {self.model_path!r}: expected one of {MODEL_SUFFIXES}')
        if self.input_size is not None and (len(self.input_size) != 2
                                            or min(self.input_size) < MIN_INPUT_SIZE):
            found.append(f'input_size must be (H, W) with H, W >= {MIN_INPUT_SIZE}, got '
                         f'{self.input_size}')
        return [problem for problem in found if problem]

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **overrides: Any) -> EngineSpec:
        """From node parameter values (name -> value) with the ENGINE_PARAMS and
        THERMAL_PARAMS names; missing ones take the table default. ``overrides`` are
        EngineSpec fields."""
        def get(name: str) -> Any:
            return params.get(name, SPECS[name].default)

        values: dict[str, Any] = {name: get(name) for name in FIELD_PARAMS}
        values['input_size'] = (get('input_height'), get('input_width'))
        values['thermal'] = ThermalSettings.from_values(params)
        values.update(overrides)
        return cls(**values)

    def to_params(self) -> dict[str, Any]:
        """Node parameter names -> values (YAML-ready; input_size None leaves the size out)."""
        values = {name: getattr(self, name) for name in FIELD_PARAMS}
        values.update((name, list(value) if isinstance(value, tuple) else value)
                      for name, value in self.thermal._asdict().items())
        if self.input_size is not None:
            values['input_height'], values['input_width'] = self.input_size
        return values

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                      names: tuple[str, ...] = ENGINE_PARAMS,
                      defaults: Mapping[str, Any] | None = None) -> None:
        """Add one option per node parameter in ``names`` (params.add_param_option: help,
        type and choices from the table). Options left out default to None: `from_args`
        then keeps its base value; ``defaults`` are the base values named in the help."""
        for name in names:
            shown = repr(defaults[name]) if defaults and name in defaults else None
            add_param_option(parser, name, shown=shown)

    @classmethod
    def from_args(cls, args: argparse.Namespace, base: EngineSpec | None = None) -> EngineSpec:
        """The spec from options added by `add_arguments`; options not given keep ``base``'s
        values (default: the table defaults, without an input size)."""
        values = dataclasses.asdict(base or cls())
        given = {name: getattr(args, name, None) for name in ENGINE_PARAMS}
        for name in FIELD_PARAMS:
            if given[name] is not None and given[name] is not False:  # False: flag not given
                values[name] = given[name]
        height, width = given['input_height'], given['input_width']
        if (height is None) != (width is None):
            raise EngineError('--input-height and --input-width must be given together')
        if height is not None:
            values['input_size'] = (height, width)
        return cls(**values)
