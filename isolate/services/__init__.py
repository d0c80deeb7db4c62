"""The services: what the commands and the scheduler do with the model.

Loading and pushing DAG folders, the catalog of stored versions, triggering and clearing
runs, locking and resolving envs, gc roots, the node's home, ``isolate doctor`` and the
host's isolation features. They may import the model (the rest of :mod:`isolate`) and
:mod:`envcache`; the model imports neither them nor :mod:`envcache`.
"""
