"""millions: the scale-out web architecture as one runnable, measurable Python system."""

__version__ = "0.1.0"
