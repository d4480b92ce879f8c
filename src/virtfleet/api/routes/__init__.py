"""Route modules, one per resource; each exports ``router``."""
