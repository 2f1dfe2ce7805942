"""ftplb: an FTP-aware load balancer for FTP and FTPS."""

__version__ = "0.1.0"
