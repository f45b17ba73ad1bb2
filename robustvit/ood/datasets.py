BUILTINS: dict[str, str] = {}
