"""The case record of one call (病例记录 / 来电记录) and its transitions. Pure."""
