"""The example voice profile, shipped as package data: the default voices folder."""
