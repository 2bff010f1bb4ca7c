"""Client-side NATS subject matching: ``*`` matches one token, a last ``>``
one or more. Used to hand a bus.message to every local handler it matches."""


def subject_matches(pattern: str, subject: str) -> bool:
    p = pattern.split(".")
    s = subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return i == len(p) - 1 and len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)
