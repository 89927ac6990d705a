"""ROS 2 managed (lifecycle) node ``occo_fusion``: the fusion node under a lifecycle manager.

The same parameters, topics and diagnostics as occo_ros.ros.fusion_node (they share
:class:`occo_ros.ros.fusion_node.FusionWiring`), but the GPU can be released without killing
the process, as yolo_ros and Isaac ROS do. Transitions (``ros2 lifecycle set`` or the
``<node>/change_state`` service of lifecycle_msgs):

* configure: load the engine, warm it up, create the (inactive) publishers; a model that
  cannot be loaded fails the transition with the reason in the log (the node stays
  unconfigured and can be configured again);
* activate: start the worker, subscribe, publish fused images and /diagnostics;
* deactivate: unsubscribe and stop the worker (the engine stays loaded);
* cleanup: destroy the publishers and release the engine (device memory);
* shutdown: all of the above that applies.
"""

from __future__ import annotations

import sys

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from occo_ros.params import NODE_NAME
from occo_ros.ros.fusion_node import STARTUP_ERRORS, FusionWiring
from occo_ros.ros.node_main import run_node
from occo_ros.util.allocator import tune_allocator


class FusionLifecycleNode(FusionWiring, LifecycleNode):
    """Declares its parameters at construction; everything else happens in transitions."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._declare_parameters()
        self._publishers_out: list = []

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._load_worker()
        except STARTUP_ERRORS as exc:
            self._release_worker()
            self.get_logger().error(f'cannot configure: {exc}')
            return TransitionCallbackReturn.FAILURE
        self._create_publishers(self.create_lifecycle_publisher)
        self._publishers_out = [self.image_pub, self.compressed_pub, self.info_pub,
                                self.diag_pub]
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)      # enables the lifecycle publishers
        self.worker.start()
        self._subscribe()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        self.worker.stop()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return super().on_shutdown(state)

    def _release(self) -> None:
        """Unsubscribe, stop the worker and release the engine, then destroy the publishers
        (in this order: a frame under way when shutdown comes from *active* must not publish
        through a destroyed publisher)."""
        self._unsubscribe()
        self._release_worker()
        for publisher in self._publishers_out:
            self.destroy_lifecycle_publisher(publisher)
        self._publishers_out = []
        self.get_logger().info('engine released')

    def destroy_node(self) -> None:
        self._unsubscribe()
        self._release_worker()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Entry point of ``fusion_lifecycle_node``."""
    tune_allocator()
    return run_node(FusionLifecycleNode, NODE_NAME, args, startup_errors=STARTUP_ERRORS)


if __name__ == '__main__':
    sys.exit(main())
