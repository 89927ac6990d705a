"""The one way this package's ROS nodes start, spin and stop (shared by every executable).

Stopping. Ctrl-C (SIGINT) or SIGTERM makes rclpy's signal handler shut the context down at
any moment, so a publish, a wait set or a timer callback already under way fails with an
``RCLError`` ("publisher's context is invalid", "failed to initialize wait set"). Such an
error after the context is shut down is the normal end of the node, not a failure:
:func:`ended_by_shutdown` says so for any thread (e.g. a worker that publishes), and
:func:`run_node` exits 0 on it. A second SIGINT after the first is ignored, and the process
ends without the interpreter's slow module teardown, so a node is gone well within the 2 s a
launch gives it.

Interrupting start-up. The node is created (export, engine build, warm-up) in a worker
thread while the main thread waits for it, so Ctrl-C or SIGTERM during start-up ends the
process at once with exit code 0, and a temporary the worker was writing is removed.

Starting. Whatever keeps the node from being created (a bad parameter, refused by rclpy or by
the node; a model that cannot be loaded) is one FATAL line saying what is wrong and what to
do, and exit code 1; the traceback is logged at DEBUG only (``--ros-args --log-level debug``).
"""

from __future__ import annotations

import atexit
from collections.abc import Callable
import ctypes
import os
import signal
import sys
import threading
import traceback
from typing import NoReturn

import rclpy
from rclpy.context import Context
from rclpy.exceptions import InvalidParameterTypeException, ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node

# rclpy's own modules take the error class from here; it is not re-exported publicly.
RCLError = rclpy_implementation.RCLError


def ended_by_shutdown(exc: BaseException, context: Context) -> bool:
    """True when ``exc`` is an rcl error caused by ``context`` having been shut down. rclpy
    raises RCLError, or a plain RuntimeError from its bindings (a message taken while the
    context goes down: "Unable to convert call argument '0' to Python object")."""
    return isinstance(exc, RuntimeError) and not context.ok()


def run_node(create: Callable[[], Node], name: str, args: list[str] | None = None,
             startup_errors: tuple[type[BaseException], ...] = (ValueError,)) -> NoReturn:
    """Create the node, spin it until Ctrl-C or shutdown, destroy it, end the process.

    Any exception while creating the node is one fatal log line and exit code 1 (see the
    module docstring); ``startup_errors`` are the expected ones, whose message names what is
    wrong, the others are shown with their type. Ctrl-C, SIGTERM and external shutdown are
    normal exits (code 0), including an rcl error they cause in a callback under way. The
    process ends without the interpreter's teardown (:func:`_exit_process`); an unexpected
    exception propagates with its traceback.
    """
    _exit_process(_spin_node(create, name, args, startup_errors))


def _spin_node(create: Callable[[], Node], name: str, args: list[str] | None,
               startup_errors: tuple[type[BaseException], ...]) -> int:
    rclpy.init(args=args)
    context = rclpy.get_default_context()
    node = None
    try:
        node = _create_interruptibly(create, context)
        if node is None:    # Ctrl-C or SIGTERM during start-up
            return 0
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:
        if ended_by_shutdown(exc, context):
            return 0
        if node is not None:    # not a start-up failure: a bug, with its traceback
            raise
        logger = rclpy.logging.get_logger(name)
        logger.fatal(f'cannot start: {startup_error_message(exc, startup_errors)}')
        logger.debug(traceback.format_exc())
        return 1
    finally:
        _close(node)
    return 0


def _create_interruptibly(create: Callable[[], Node], context: Context) -> Node | None:
    """``create()`` in a worker thread while this (main) thread waits for it: an export,
    engine build or warm-up runs for seconds to minutes in code that neither sees
    KeyboardInterrupt nor checks the context (SIGTERM only shuts the context down), so the
    main thread watches both and gives up on the worker (None) at once; the process then
    ends without waiting for it, and the temporaries it was writing are removed at exit
    (:mod:`occo_ros.util.atomic_file`). The worker's exception is raised here."""
    done = threading.Event()
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome['node'] = create()
        except BaseException as exc:  # handed to the main thread
            outcome['error'] = exc
        finally:
            done.set()

    threading.Thread(target=work, name='node start-up', daemon=True).start()
    while not done.wait(0.05):
        if not context.ok():
            return None
    if not context.ok():
        return None
    if 'error' in outcome:
        raise outcome['error']
    return outcome['node']


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
    """Destroy the node and shut rclpy down, then ignore further SIGINTs until the process
    ends: a terminal's Ctrl-C pressed twice, or a launch that forwards SIGINT to a process
    the terminal already signalled, must not raise KeyboardInterrupt in the interpreter's
    teardown (a traceback). A second Ctrl-C during the cleanup only cuts it short."""
    try:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _exit_process(code: int) -> NoReturn:
    """End the process with ``code`` once the node is destroyed: atexit handlers run and the
    Python and C output streams are flushed (no log line is lost), but the interpreter's
    teardown of every imported module is skipped. With PyTorch and ONNX Runtime loaded, that
    teardown made the fusion node take 1.9-2.7 s to end after Ctrl-C on a busy 2-core CPU
    (bench/bench_shutdown.py; 0.1-0.3 s without it), and it frees nothing the OS does not."""
    atexit._run_exitfuncs()   # CPython's own exit sequence, minus the module teardown
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    ctypes.CDLL(None).fflush(None)   # rcutils writes console log lines with C stdio
    os._exit(code)
