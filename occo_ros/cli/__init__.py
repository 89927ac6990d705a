"""Command-line tools, one module per command (occo-bag, occo-build-engine, occo-calibrate,
occo-export, occo-fuse, occo-params). A CLI module imports library code, never another CLI
module."""
