"""Interpretability analyses on hooked recurrent models; each returns plain data, figures apart."""
