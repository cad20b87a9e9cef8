"""Routing decisions: caller classes and escalation chains. Pure: no clock, no I/O."""
