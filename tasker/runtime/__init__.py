"""What `tasker run` runs: internal, not public API (names here may change between releases).

The instance (`instance.Instance`) builds and orders the services; every
background loop is one `service.Service`.
"""
