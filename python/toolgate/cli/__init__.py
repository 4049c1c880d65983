"""The ``toolgate`` command line: the parser (main), and one module per command or group of
commands, each turning options into a call of the role that does the work."""
