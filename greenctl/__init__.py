"""greenctl: LLM classification experiments with time, energy and CO2 per inference."""
import sys as _sys

__version__ = "0.1.0"

JOIN_TOKEN_PREFIX = "gct1."    # shared.join_token's prefix; not imported, to keep this start-up path tiny


def hide_join_token(argv: list[str] | None = None) -> bool:
    """Show a join token given on the command line (`--join gct1.…` or `--join=gct1.…`) as ***
    in the process title, so `ps` and /proc/PID/cmdline stop showing a secret to other users.
    Runs when the package is first imported, before the CLI's imports (several seconds on a busy
    machine). sys.argv keeps the token: the CLI still has to read it (the worker command then
    masks sys.argv too). True when a token was hidden."""
    argv = list(_sys.argv if argv is None else argv)
    hidden = False
    for i, arg in enumerate(argv):
        if arg.startswith(JOIN_TOKEN_PREFIX) and i > 0 and argv[i - 1] == "--join":
            argv[i], hidden = "***", True
        elif arg.startswith("--join=" + JOIN_TOKEN_PREFIX):
            argv[i], hidden = "--join=***", True
    if hidden:
        import setproctitle

        setproctitle.setproctitle(" ".join(argv))
    return hidden


hide_join_token()
