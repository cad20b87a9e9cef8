"""IVR adapters: the menu, FastAGI server and handlers, and the AMI client that drive Asterisk."""
