"""aniportraitgan: an open implementation of AniPortraitGAN (SIGGRAPH Asia 2023).

A 3D-aware GAN that generates head-and-shoulder portraits with explicit control of camera,
facial expression, head pose and shoulder pose. See README.md for the map of modules.
"""

__version__ = "0.1.0"
