"""The node's stream step and frame step applied to recorded data: bag-to-bag fusion
(occo-bag). Library code for the command-line tools; imports no ROS."""
