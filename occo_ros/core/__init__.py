"""The ROS-free fusion core: image codecs, colour, thermal normalisation, registration,
arrival checks, pairing, the stream step, statistics and health."""
