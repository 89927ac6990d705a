"""Synthetic scenes (no ROS): a procedural night street and a calibration target, each as
a thermal and an RGB camera would see them."""
