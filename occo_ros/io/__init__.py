"""Reading and writing data without ROS: rosbag2 bags and folders of image pairs."""
