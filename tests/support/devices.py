"""conftest.py splits the CPU into 8 fake devices so that sharding tests build real meshes. A tiny
model trained data parallel across all 8 on a 2-core machine runs about 3x slower than on one
device (100 Shakespeare steps: 77 s against 24 s), so tests that train without testing
sharding build their mesh from one device with this override."""

ONE_DEVICE = "mesh.num_devices=1"
ONE_DEVICE_MESH = {"num_devices": 1}  # the same, for configs given as dicts
