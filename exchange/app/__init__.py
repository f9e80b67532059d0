"""The command line and composition root: settings, runtime, exit codes, provisioning."""
