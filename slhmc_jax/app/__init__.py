"""The application: config, workflow, validation, command line and file I/O."""
