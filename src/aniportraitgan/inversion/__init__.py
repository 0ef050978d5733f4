"""GAN inversion: a photo -> an identity of the generator (latent search, optional pivotal tuning)."""
