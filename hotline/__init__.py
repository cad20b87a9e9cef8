"""The 96608 hotline's composition root, configuration and command line."""
