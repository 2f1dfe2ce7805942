"""Benchmarks of ftplb against a direct path, HAProxy and ProFTPD mod_proxy."""
