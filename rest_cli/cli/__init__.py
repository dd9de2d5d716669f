"""The command-line layer: one small module per subcommand over the library."""
