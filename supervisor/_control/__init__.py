"""The control API: an HTTP API served by a runtime, its access control."""
