"""greenctl: LLM classification experiments with time, energy and CO2 per inference."""
__version__ = "0.1.0"
