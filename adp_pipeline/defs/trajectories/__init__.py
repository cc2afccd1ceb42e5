"""Accepted tasks in, one verified trajectory each out."""
