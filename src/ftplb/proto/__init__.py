"""Sans-IO FTP protocol core: parsers, rules and the control-session state machine."""
