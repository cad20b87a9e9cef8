"""Running the hotline as a small cluster: the SIP front door, several Asterisk nodes and service instances."""
