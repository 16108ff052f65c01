"""The `switch` command groups, one module each (registered in switch/cli.py)."""
