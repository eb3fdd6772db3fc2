"""The bundled synthetic data sets (planted effects), built on demand by ``path: sample``."""
