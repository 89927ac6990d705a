"""The one way this package's ROS nodes start, spin and stop (shared by both executables).

Stopping. Ctrl-C (SIGINT) or SIGTERM makes rclpy's signal handler shut the context down at
any moment, so a publish, a wait set or a timer callback already under way fails with an
``RCLError`` ("publisher's context is invalid", "failed to initialize wait set"). Such an
error after the context is shut down is the normal end of the node, not a failure:
:func:`ended_by_shutdown` says so for any thread (e.g. a worker that publishes), and
:func:`run_node` exits 0 on it.
"""

from __future__ import annotations

from collections.abc import Callable

import rclpy
from rclpy.context import Context
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

    A ``startup_errors`` exception while creating the node is a clear fatal log line and exit
    code 1 (no traceback: the message names what is wrong). ``spin(node)`` False skips
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
    except startup_errors as exc:
        if node is not None:
            raise
        rclpy.logging.get_logger(name).fatal(f'cannot start: {exc}')
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError as exc:
        if not ended_by_shutdown(exc, context):
            raise
    finally:
        _close(node)
    return 0


def _close(node: Node | None) -> None:
    """Destroy the node and shut rclpy down; a second Ctrl-C meanwhile only hurries it."""
    try:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    except KeyboardInterrupt:
        pass
