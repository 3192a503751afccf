"""Stories of the Textual app, driven with Textual's Pilot over tiny real MLX models."""
