"""Real-world front end: detect, fit and crop real portrait photos into the dataset format.

`detection` wraps mediapipe (optional, the `[track]` extra), `fitting` solves body-model labels
from detected points (batched torch), `prepare` is the `aniportraitgan data prepare` pipeline.
"""
