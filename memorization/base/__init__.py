"""The base every layer stands on: one-line errors (errors.py), atomic files, the console and
conf/ (io.py), overrides, the folder lock, the config store (store.py: how a config dataclass
becomes a Hydra schema), devices and precision (accel.py, distributed.py), the launcher's threads
and workers (launch.py), the ``${mem.*}`` resolvers, and the process set-up every entry point
calls first (process.py).

Layer: base; imports nothing of the package outside base/.
"""
