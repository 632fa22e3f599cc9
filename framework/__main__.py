from framework.cli import entry

entry()
