"""What the watcher and the function must agree on: object keys and result file names.

Dependency-free on purpose: both deployables import it, neither pulls the other's stack.
"""
