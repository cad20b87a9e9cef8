"""Asterisk config templates and the renderer that turns the menu config into a dialplan."""
