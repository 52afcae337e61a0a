"""A local, wire-faithful simulator of Volcengine Ark's Seedream image and Seedance video APIs (see README.md)."""
