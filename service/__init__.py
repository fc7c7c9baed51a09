"""Feature-flag-driven model selection: Unleash flags route each request to a BentoML bento."""

__version__ = "0.1.0"
