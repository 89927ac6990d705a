"""occo_ros: real-time thermal + visible image fusion with the OCCO network (FIFN) for ROS 2.

A ROS-free core (core/, model/, engines/, calibration/, io/, offline/, synthetic/, util/,
tied together by params, pipeline and worker) under a thin ROS 2 shell (ros/) and the
command-line tools (cli/); docs/ARCHITECTURE.md maps every module and the import rules.
"""

__version__ = '0.2.0'
