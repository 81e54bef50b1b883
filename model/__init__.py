"""aedmae's method: the self-distilled masked auto-encoder, its data, training and scoring.

Imports neither ``export`` nor ``service``. Torch-free modules (scoring maths, smoothing,
calibration, metrics) stay importable without torch so that the service can use them.
"""

__version__ = "0.1.0"
