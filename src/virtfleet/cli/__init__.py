"""The ``virtfleet`` CLI (Typer + Rich). Thin: arguments -> client -> rendering."""
