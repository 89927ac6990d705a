"""The one way this package's ROS nodes start, spin and stop (shared by both executables)."""

from __future__ import annotations

from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node


def run_node(create: Callable[[], Node], name: str, args: list[str] | None = None,
             startup_errors: tuple[type[BaseException], ...] = (ValueError,),
             spin: Callable[[Node], bool] = lambda node: True) -> int:
    """Create the node, spin it until Ctrl-C or shutdown, destroy it; return the exit code.

    A ``startup_errors`` exception while creating the node is a clear fatal log line and exit
    code 1 (no traceback: the message names what is wrong). ``spin(node)`` False skips
    spinning (e.g. ``build_only``). Ctrl-C and external shutdown are normal exits.
    """
    rclpy.init(args=args)
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
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
