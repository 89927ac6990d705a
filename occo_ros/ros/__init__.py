"""The ROS 2 shell: the fusion nodes, their start-up, the synthetic cameras node, the launch
decisions and the demo. Imports no deep-learning framework at import time."""
