"""The command line and composition root: settings, runtime, provisioning, quiescence."""
