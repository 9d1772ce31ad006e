"""musenet-jax: a JAX/Flax reimplementation of OpenAI's MuseNet."""

__version__ = "0.1.0"
