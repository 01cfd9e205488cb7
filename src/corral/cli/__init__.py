"""The `corral` command line: thin wrappers over models/ and runtime/."""
