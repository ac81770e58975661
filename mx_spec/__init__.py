"""Bit-exact numpy model of OCP Microscaling (MX) v1.0."""
