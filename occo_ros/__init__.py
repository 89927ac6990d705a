"""occo_ros: real-time thermal + visible image fusion with the OCCO network (FIFN) for ROS 2.

The package splits into a ROS-free core (codec, thermal, registration, color, pairing,
model, engines, pipeline) and thin ROS 2 shells (fusion_node, synthetic_cameras).
"""

__version__ = '0.2.0'
