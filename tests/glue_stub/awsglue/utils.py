def getResolvedOptions(argv, options):
    """``--NAME VALUE`` pairs for the requested names; a missing one fails as on Glue."""
    out = {}
    for name in options:
        flag = f"--{name}"
        if flag not in argv:
            raise SystemExit(f"error: the following arguments are required: {flag}")
        out[name] = argv[argv.index(flag) + 1]
    return out
