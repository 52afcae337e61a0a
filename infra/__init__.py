"""arkflow's AWS stack: everything beyond what Chalice generates, derived from `chalicelib.resources`."""
