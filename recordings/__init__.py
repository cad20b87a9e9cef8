"""Where recordings and prompt audio live: naming, prompt synthesis, durations."""
