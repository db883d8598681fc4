"""The ``netmorph`` command (click). Thin: parse, call the library, print."""
