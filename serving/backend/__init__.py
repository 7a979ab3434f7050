"""Code that runs inside Triton (the Python-backend model), shipped as package data."""
