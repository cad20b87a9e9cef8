"""Real SIP phones for tests and the demo: baresip driven over ctrl_tcp."""
