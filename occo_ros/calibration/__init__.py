"""Calibration of the thermal camera to the RGB camera: the methods behind occo-calibrate
and the calibration file the node loads (no ROS import)."""
