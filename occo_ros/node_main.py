"""The one way this package's ROS nodes start, spin and stop (shared by both executables).

Stopping. Ctrl-C (SIGINT) or SIGTERM makes rclpy's signal handler shut the context down at
any moment, so a publish, a wait set or a timer callback already under way fails with an
``RCLError`` ("publisher's context is invalid", "failed to initialize wait set"). Such an
error after the context is shut down is the normal end of the node, not a failure:
:func:`ended_by_shutdown` says so for any thread (e.g. a worker that publishes), and
:func:`run_node` exits 0 on it.

Starting. Whatever keeps the node from being created (a bad parameter, refused by rclpy or by
the node; a model that cannot be loaded) is one FATAL line saying what is wrong and what to
do, and exit code 1; the traceback is logged at DEBUG only (``--ros-args --log-level debug``).
"""

from __future__ import annotations

from collections.abc import Callable
import traceback

import rclpy
from rclpy.context import Context
from rclpy.exceptions import InvalidParameterTypeException, ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node

# rclpy's own modules take the error class from here; it is not re-exported publicly.
RCLError = rclpy_implementation.RCLError


def ended_by_shutdown(exc: BaseException, context: Context) -> bool:
    """True when ``exc`` is an rcl error caused by ``context`` having been shut down."""
    return isinstance(exc, RCLError) and not context.ok()


def run_node(create: Callable[[], Node], name: str, args: list[str] | None = None,
             startup_errors: tuple[type[BaseException], ...] = (ValueError,),
             spin: Callable[[Node], bool] = lambda node: True) -> int:
    """Create the node, spin it until Ctrl-C or shutdown, destroy it; return the exit code.

    Any exception while creating the node is one fatal log line and exit code 1 (see the
    module docstring); ``startup_errors`` are the expected ones, whose message names what is
    wrong, the others are shown with their type. ``spin(node)`` False skips
    spinning (e.g. ``build_only``). Ctrl-C, SIGTERM and external shutdown are normal exits
    (code 0), including an rcl error they cause in a callback under way.
    """
    rclpy.init(args=args)
    context = rclpy.get_default_context()
    node = None
    try:
        node = create()
        if spin(node):
            rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError as exc:
        if not ended_by_shutdown(exc, context):
            raise
    except Exception as exc:
        if node is not None:    # not a start-up failure: a bug, with its traceback
            raise
        logger = rclpy.logging.get_logger(name)
        logger.fatal(f'cannot start: {startup_error_message(exc, startup_errors)}')
        logger.debug(traceback.format_exc())
        return 1
    finally:
        _close(node)
    return 0


def startup_error_message(exc: Exception,
                          expected: tuple[type[BaseException], ...] = ()) -> str:
    """One line: what kept the node from starting and what to do about it."""
    if isinstance(exc, ParameterException):    # rclpy refused a -p value or a params entry
        text, _, name = str(exc).rpartition(': ')  # rclpy's '<message>: <parameter name>'
        text = text.split('Reason: ', 1)[-1]
        hint = 'fix it in the -p argument or the parameters file'
        if isinstance(exc, InvalidParameterTypeException) and "'DOUBLE'" in text:
            hint += ' (a float needs a decimal point: 1.0, not 1)'
        return f'parameter {name}: {text}; {hint}'
    if isinstance(exc, expected):
        return str(exc)
    return (f'{type(exc).__name__}: {exc} (run with --ros-args --log-level debug for the '
            'traceback)')


def _close(node: Node | None) -> None:
    """Destroy the node and shut rclpy down; a second Ctrl-C meanwhile only hurries it."""
    try:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    except KeyboardInterrupt:
        pass
